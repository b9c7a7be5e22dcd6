"""The credential flags of every command that sends requests (``probe``, ``doctor``):
one set, so they read and behave the same everywhere. No flag takes a secret itself."""

from __future__ import annotations

import argparse


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key-env", metavar="VAR", help="read the bearer token from $VAR")
    parser.add_argument("--api-key-file", metavar="PATH", help="read the bearer token from PATH")
    parser.add_argument(
        "--basic-auth-user", metavar="NAME", help="HTTP basic auth as NAME (instead of a key)"
    )
    parser.add_argument(
        "--basic-auth-password-file", metavar="PATH", help="read the basic-auth password from PATH"
    )
    parser.add_argument(
        "--basic-auth-password-env", metavar="VAR", help="read the basic-auth password from $VAR"
    )
