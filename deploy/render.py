#!/usr/bin/env python3
"""Render Salve's Helm chart like `helm template`, without a helm binary.

Uses Helm v4's own engine through the `helm-python-sdk` wheel (pip install
helm-python-sdk==0.2.2): the same template functions, values coalescing and
values.schema.json validation as `helm template`. tests/deploy.rs runs it for every mode.

    python3 deploy/render.py                                   # the chart's defaults
    python3 deploy/render.py -f deploy/helm/examples/ha.yaml   # a mode's example values
    python3 deploy/render.py --set replicas=3 --set policy.dryRun=false
    python3 deploy/render.py --set-json 'rbac.extraRules=[{"apiGroups":[""],"resources":["services"],"verbs":["get"]}]'
    python3 deploy/render.py --include-crds | kubectl apply -f -
    python3 deploy/render.py --lint                            # `helm lint`

Prints multi-document YAML on stdout (each document headed by `# Source: <template>`), or on
failure the error on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parent / "helm" / "salve"


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values: maps merge key by key, anything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart", nargs="?", default=str(CHART), help="the chart directory")
    parser.add_argument("-f", "--values", action="append", default=[], help="a values file")
    parser.add_argument("--set", action="append", default=[], help="key=value, as helm --set")
    parser.add_argument(
        "--set-json", action="append", default=[], help="key=JSON, as helm --set-json"
    )
    parser.add_argument("--name", default="salve", help="the release name")
    parser.add_argument("--namespace", default="salve-system", help="the release namespace")
    parser.add_argument("--include-crds", action="store_true", help="print crds/ first")
    parser.add_argument("--lint", action="store_true", help="lint instead (helm lint --strict)")
    args = parser.parse_args()

    try:
        import helm_python as helm
    except ImportError:
        print(
            "render.py: needs the helm-python-sdk wheel: pip install helm-python-sdk==0.2.2",
            file=sys.stderr,
        )
        return 2

    try:
        values: dict[str, Any] = {}
        for path in args.values:
            values = merge(values, helm.values_from_yaml(Path(path).read_text()))
        for expression in args.set:
            values = merge(values, helm.parse_set_string(expression))
        for expression in args.set_json:
            values = merge(values, helm.parse_set_json(expression))

        if args.lint:
            report = helm.lint(args.chart, values, strict=True, namespace=args.namespace)
            for message in report.get("messages", []):
                level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(message["severity"], "?")
                print(f"[{level}] {message['path']}: {message['error']}")
            for error in report.get("errors") or []:
                print(f"[ERROR] {error}")
            failed = report.get("errors") or any(
                m["severity"] >= 2 for m in report.get("messages", [])
            )
            print(f"{report.get('total_charts_linted', 0)} chart(s) linted, "
                  f"{'failed' if failed else 'no failures'}")
            return 1 if failed else 0

        with helm.Chart.load(args.chart) as chart:
            # `helm template` validates the user's values, coalesced with the defaults.
            chart.validate_schema(values)
            rendered = chart.render(
                values, name=args.name, namespace=args.namespace, is_install=True
            )
            documents = []
            if args.include_crds:
                for crd in chart.crds:
                    documents.append((crd["name"], crd["data"]))
            for template in sorted(rendered):
                if template.endswith("NOTES.txt"):
                    continue
                documents.append((template, rendered[template]))
    except helm.HelmError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 1

    out = []
    for source, text in documents:
        for document in text.split("\n---"):
            body = document.strip("\n")
            if not body.strip() or all(
                line.lstrip().startswith("#") or not line.strip() for line in body.splitlines()
            ):
                continue
            out.append(f"---\n# Source: {source}\n{body.removeprefix('---').lstrip(chr(10))}\n")
    sys.stdout.write("".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
