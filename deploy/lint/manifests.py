"""Validate every manifest under a directory, offline and strictly (unknown fields rejected).

Every ``*.yaml`` and ``*.yml`` file of the folder and of all its subfolders (the fleet
example in deploy/kubernetes/fleet/ as much as the sidecar one above it). Built-in kinds
go to kubernetes-validate for one pinned Kubernetes version; custom resources to the
openAPIV3Schema of their CRD in deploy/lint/crds/, made just as strict; files that are
not Kubernetes objects are named as skipped. Any object without a schema fails, and so
does a file that is not valid YAML or a folder with no manifest at all. Run with the lint
virtualenv: `make lint-deploy`.
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
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        problems.append("metadata.name: missing")
    return problems


def check_kustomization(path: Path, doc: dict[str, Any]) -> list[str]:
    """Every resource exists: a file, or a folder with its own kustomization."""
    resources = doc.get("resources", [])
    if not isinstance(resources, list):
        return ["resources: expected a list"]
    problems = []
    for name in resources:
        where = path.parent / str(name)
        if where.is_dir():
            if not any((where / k).is_file() for k in ("kustomization.yaml", "kustomization.yml")):
                problems.append(f"resources: {name} is a folder without a kustomization.yaml")
        elif not where.is_file():
            problems.append(f"resources: {name} does not exist")
    return problems


def manifest_files(folder: Path) -> list[Path]:
    """The YAML files under ``folder``, subfolders included, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def check_document(
    path: Path, doc: dict[str, Any], version: str, schemas: dict[tuple[str, str], dict[str, Any]]
) -> tuple[list[str], str]:
    """The problems of one Kubernetes object, and how it was checked."""
    api, kind = str(doc["apiVersion"]), str(doc["kind"])
    if api.startswith("kustomize.config.k8s.io/"):
        return check_kustomization(path, doc), "kustomize file, its resources exist"
    if (api, kind) in schemas:
        how = f"against the {api} {kind} CRD schema ({CRDS.name}/)"
        return validate_custom(doc, schemas[(api, kind)]), how
    how = f"kubernetes-validate --strict, Kubernetes {version}"
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {api} {kind}: add its CRD to {CRDS}"], how
    except kubernetes_validate.ValidationError as error:
        where = ".".join(map(str, error.path)) or "(root)"
        return [f"{where}: {error.message}"], how
    return [], how


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"FAIL {args.folder}: not a directory")
        return 1
    known = sorted(set(kubernetes_validate.utils.all_versions()))
    if args.kubernetes_version not in known:
        print(
            f"FAIL --kubernetes-version {args.kubernetes_version}: this kubernetes-validate "
            f"knows {known[0]} to {known[-1]}"
        )
        return 1
    schemas = crd_schemas(CRDS)
    failed = passed = skipped = 0
    files = manifest_files(args.folder)
    for path in files:
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            failed += 1
            print(f"FAIL {path}: cannot read it as YAML: {' '.join(str(exc).split())}")
            continue
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                print(f"SKIP {path}: not a Kubernetes object (no apiVersion/kind)")
                skipped += 1
                continue
            metadata = doc.get("metadata")
            named = isinstance(metadata, dict) and metadata.get("name")
            name = f"{doc['kind']}/{metadata['name']}" if named else str(doc["kind"])
            problems, how = check_document(path, doc, args.kubernetes_version, schemas)
            if problems:
                failed += 1
                for problem in problems:
                    print(f"FAIL {path} {name}: {problem}")
            else:
                passed += 1
                print(f"PASS {path} {name} ({how})")
    if not passed and not failed:
        print(f"FAIL {args.folder}: no Kubernetes manifest found")
        failed += 1
    folders = len({p.parent for p in files})
    print(
        f"manifests: {passed} passed, {failed} failed, {skipped} skipped "
        f"({len(files)} files in {folders} folder(s))"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
