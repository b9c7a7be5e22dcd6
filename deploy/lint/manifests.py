"""Validate every manifest under a directory, offline and strictly (unknown fields rejected).

Built-in kinds go to kubernetes-validate for one pinned Kubernetes version; custom
resources to the openAPIV3Schema of their CRD in deploy/lint/crds/, made just as strict;
files that are not Kubernetes objects are named as skipped. Any object without a schema
fails. Run with the lint virtualenv: `make lint-deploy`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

CRDS = Path(__file__).resolve().parent / "crds"


def crd_schemas(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD's schema for that version."""
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict(schema: Any) -> Any:
    """The API server prunes unknown fields of a structural schema; reject them instead,
    as kubernetes-validate --strict does for built-in kinds."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate_custom(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
    if not doc.get("metadata", {}).get("name"):
        problems.append("metadata.name: missing")
    return problems


def check_kustomization(path: Path, doc: dict[str, Any]) -> list[str]:
    return [
        f"resources: {name} does not exist"
        for name in doc.get("resources", [])
        if not (path.parent / name).is_file()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    schemas = crd_schemas(CRDS)
    failed = passed = skipped = 0
    for path in sorted(args.folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                print(f"SKIP {path}: not a Kubernetes object (no apiVersion/kind)")
                skipped += 1
                continue
            api, kind = doc["apiVersion"], doc["kind"]
            name = kind + "/" + doc["metadata"]["name"] if doc.get("metadata") else kind
            if api.startswith("kustomize.config.k8s.io/"):
                problems = check_kustomization(path, doc)
                how = "kustomize file, its resources exist"
            elif (api, kind) in schemas:
                problems = validate_custom(doc, schemas[(api, kind)])
                how = f"against the {api} {kind} CRD schema ({CRDS.name}/)"
            else:
                try:
                    kubernetes_validate.validate(doc, args.kubernetes_version, strict=True)
                    problems = []
                except kubernetes_validate.SchemaNotFoundError:
                    problems = [f"no schema for {api} {kind}: add its CRD to {CRDS}"]
                except kubernetes_validate.ValidationError as error:
                    where = ".".join(map(str, error.path)) or "(root)"
                    problems = [f"{where}: {error.message}"]
                how = f"kubernetes-validate --strict, Kubernetes {args.kubernetes_version}"
            if problems:
                failed += 1
                for problem in problems:
                    print(f"FAIL {path} {name}: {problem}")
            else:
                passed += 1
                print(f"PASS {path} {name} ({how})")
    print(f"manifests: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
