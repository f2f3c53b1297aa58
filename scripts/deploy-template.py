#!/usr/bin/env python3
"""The deploy template: template.yaml with each function's code being the zip of one build.

`make deploy` builds the six functions once (scripts/build-lambdas.sh, cargo-lambda, one
`cargo lambda build` for all the binaries), then runs this script, then
`sam deploy --guided --template-file target/deploy/template.json`. In the template written here
each AWS::Serverless::Function's `CodeUri` is the path of its binary's zip,
`<target>/lambda/<architecture>/<binary>/bootstrap.zip`, and its `BuildMethod` /
`BuildProperties` metadata (what `sam build` reads) is gone; everything else is template.yaml's,
as data (scripts/check-deploy-template.py compares the two). SAM CLI uploads a `.zip` CodeUri as
it is, resolving a relative path against the template's own directory (samcli/lib/package/utils.py,
`upload_local_artifacts`): the paths written here are relative to the output file's directory,
so the template deploys from any working directory, and the tree can move.

The binary is the function's `Metadata.BuildProperties.Binary`; the architecture its
`Architectures` (or the Globals'). A function without a binary, an architecture other than one of
arm64 / x86_64, a zip that is missing, not a zip, or without an executable `bootstrap` at its
root: refused, naming it (exit 1), before anything is written.

  scripts/deploy-template.py                     # target/deploy/template.json from target/lambda/
  scripts/deploy-template.py --architectures     # prints the architectures to build (arm64)
  scripts/deploy-template.py --target-dir DIR    # DIR/lambda/... into DIR/deploy/template.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import stat
import sys
import zipfile
from pathlib import Path

from cfn_template import load_template, serverless_functions

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = {"arm64", "x86_64"}  # scripts/build-lambdas.sh: target/lambda/<arch>/
BUILD_METADATA = ("BuildMethod", "BuildProperties")  # what `sam build` reads; dropped here


class Refused(Exception):
    pass


def binary_of(logical: str, resource: dict) -> str:
    metadata = resource.get("Metadata", {})
    binary = metadata.get("BuildProperties", {}).get("Binary")
    if metadata.get("BuildMethod") != "rust-cargolambda" or not isinstance(binary, str) or not binary:
        raise Refused(f"{logical}: no Metadata BuildMethod rust-cargolambda with "
                      f"BuildProperties.Binary (which of the binaries is its code?)")
    return binary


def architecture_of(logical: str, resource: dict, template: dict) -> str:
    globals_ = template.get("Globals", {}).get("Function", {})
    architectures = resource.get("Properties", {}).get("Architectures",
                                                        globals_.get("Architectures", ["x86_64"]))
    if not (isinstance(architectures, list) and len(architectures) == 1
            and architectures[0] in ARCHITECTURES):
        raise Refused(f"{logical}: Architectures {architectures!r} is not one of "
                      f"{sorted(ARCHITECTURES)}")
    return architectures[0]


def zip_path(target: Path, architecture: str, binary: str) -> Path:
    return target / "lambda" / architecture / binary / "bootstrap.zip"


def check_zip(logical: str, path: Path, architecture: str) -> None:
    build = ("run `make deploy`, or scripts/tools.sh run -- scripts/build-lambdas.sh "
             f"{architecture}")
    if not path.is_file():
        raise Refused(f"{logical}: {path} does not exist ({build})")
    if not zipfile.is_zipfile(path):
        raise Refused(f"{logical}: {path} is not a zip (SAM CLI would zip it again: {build})")
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo("bootstrap")
        except KeyError:
            raise Refused(f"{logical}: {path} has no `bootstrap` at its root ({build})") from None
    mode = info.external_attr >> 16
    if not mode & stat.S_IXUSR:
        raise Refused(f"{logical}: {path}: `bootstrap` is not executable ({build})")


def architectures(template: dict) -> list[str]:
    """The architectures the template's functions run on (the zips `make deploy` builds)."""
    return sorted({architecture_of(logical, resource, template)
                   for logical, resource in serverless_functions(template).items()})


def derive(template: dict, target: Path, out: Path) -> dict:
    """template with each function's CodeUri its zip's path relative to out's directory."""
    derived = copy.deepcopy(template)
    functions = serverless_functions(derived)
    if not functions:
        raise Refused("the template has no AWS::Serverless::Function")
    for logical, resource in functions.items():
        binary = binary_of(logical, resource)
        architecture = architecture_of(logical, resource, template)
        path = zip_path(target, architecture, binary)
        check_zip(logical, path, architecture)
        relative = os.path.relpath(path.resolve(), out.parent.resolve())
        resource.setdefault("Properties", {})["CodeUri"] = Path(relative).as_posix()
        metadata = resource["Metadata"]
        for key in BUILD_METADATA:
            metadata.pop(key, None)
        if not metadata:
            del resource["Metadata"]
    return derived


def link_samconfig(out: Path, samconfig: Path) -> str:
    """out's directory's samconfig.toml: a relative symbolic link to samconfig."""
    link = out.parent / "samconfig.toml"
    if link.resolve() == samconfig.resolve() and not link.is_symlink():
        return samconfig.name  # the template is written beside samconfig itself
    target = os.path.relpath(samconfig.resolve(), out.parent.resolve())
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        # A guided deploy before the link existed saved its answers here.
        if samconfig.exists():
            raise Refused(f"{link} and {samconfig} both exist: keep one (the second is the one "
                          f"`make deploy` uses) and delete the other")
        link.replace(samconfig)
    link.symlink_to(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", default=str(ROOT / "template.yaml"))
    parser.add_argument("--target-dir", default=str(ROOT / "target"),
                        help="where lambda/<arch>/<binary>/bootstrap.zip are (default target/)")
    parser.add_argument("--out", help="default <target-dir>/deploy/template.json")
    parser.add_argument("--samconfig", default=str(ROOT / "samconfig.toml"),
                        help="what <out's directory>/samconfig.toml links to (default ./samconfig.toml)")
    parser.add_argument("--architectures", action="store_true",
                        help="print the architectures the functions run on, and exit")
    arguments = parser.parse_args()

    template = load_template(Path(arguments.template))
    target = Path(arguments.target_dir)
    out = Path(arguments.out) if arguments.out else target / "deploy" / "template.json"
    try:
        if arguments.architectures:
            print(" ".join(architectures(template)))
            return 0
        derived = derive(template, target, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        linked = link_samconfig(out, Path(arguments.samconfig))
    except Refused as refused:
        print(f"deploy-template: {refused}", file=sys.stderr)
        return 1
    out.write_text(json.dumps(derived, indent=2, ensure_ascii=False) + "\n")
    for logical, resource in serverless_functions(derived).items():
        print(f"deploy-template: {logical}: CodeUri {resource['Properties']['CodeUri']}")
    print(f"deploy-template: wrote {out} (samconfig.toml beside it: a link to {linked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
