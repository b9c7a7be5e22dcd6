"""Label values from servers, bounded: a model name an engine or a /v1/models answer hands
over becomes a Prometheus label value only in bounded length and character set."""

from __future__ import annotations

import hashlib
import re

MAX_LABEL_CHARS = 128
OVERFLOW = "(other)"  # parentheses are replaced in real names: this can never clash
_ODD = re.compile(r"[^A-Za-z0-9._:/@+=-]")


def model_label(name: str) -> str:
    """A safe, bounded label value for a model name (unchanged for ordinary names)."""
    label = _ODD.sub("_", name[: MAX_LABEL_CHARS * 4])
    if len(name) > MAX_LABEL_CHARS or len(label) > MAX_LABEL_CHARS:
        digest = hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:12]
        label = label[: MAX_LABEL_CHARS - 13] + "~" + digest
    return label or "_"
