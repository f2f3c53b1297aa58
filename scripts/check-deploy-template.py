#!/usr/bin/env python3
"""Checks of what `make deploy` deploys, offline: `make check-deploy`, part of `make validate`.

`make deploy` builds the functions once (scripts/build-lambdas.sh), derives
target/deploy/template.json from template.yaml (scripts/deploy-template.py: each function's
CodeUri the path of its binary's zip) and runs `sam deploy --guided` on it. Here, in the tools'
venv (SAM CLI 1.170.0, cfn-lint), with dummy zips (each a `bootstrap` naming its binary and
architecture) in a scratch tree laid out as the repository (target/deploy-check/: target/lambda/,
target/deploy/, samconfig.toml; the other architecture's zips are there too, as decoys):

1. deploy-template.py writes the template (exit 0);
2. every AWS::Serverless::Function's CodeUri, resolved against the derived template's directory
   (as SAM CLI resolves it), is its own binary's zip for its architecture, and that file exists
   (opened: its bootstrap names the binary and the architecture);
3. no resource keeps BuildMethod / BuildProperties metadata;
4. everything else is template.yaml's: both parsed, CodeUri and the build metadata taken out of
   both, the two are equal as data;
5. `sam validate`, `sam validate --lint` and cfn-lint accept the derived template (offline,
   us-east-1);
6. a zip missing, not a zip, without a `bootstrap` or with one that is not executable: refused,
   exit 1 naming the function, no template written;
7. the guided deploy, run in-process with SAM CLI itself on the derived template, answered with
   the transcript in docs/runbook.md ("Deploy and connect Wati"): the prompts SAM CLI prints are
   the transcript's, in order, and every answer is one CloudFormation takes (AllowedPattern,
   AllowedValues, MinValue, MaxValue), and the Secrets Manager secret CloudFormation would write
   from them (the `Secrets` resource's SecretString) is one the receiver and the api function
   take at init (JSON, the current values at least 16 characters). The managed bucket, the S3
   uploads and the CloudFormation calls are stood in (nothing leaves the machine;
   AWS_ENDPOINT_URL points at a closed port, so a call not stood in fails instead): each
   function's code uploaded is its own zip, byte for
   byte (not zipped again), and the packaged template's CodeUri names that upload; the answers
   are saved in the root's samconfig.toml (through target/deploy/samconfig.toml, a link), no
   secret in it. A second guided deploy finds them and offers them as defaults, asks the NoEcho
   parameters again (an empty answer is asked again), and asks nothing more with the Function
   URL on.

Exit status 0 when every check passed, 1 otherwise (each failure printed).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from unittest import mock

from cfn_template import load_template, serverless_functions
from check_report import Failures

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "target" / "deploy-check"
DERIVE = ROOT / "scripts" / "deploy-template.py"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_SECTION = "## Deploy and connect Wati"
ARCHITECTURES = ("arm64", "x86_64")
BUILD_METADATA = ("BuildMethod", "BuildProperties")
MARKER = "wati-ingest check-deploy-template:"
BUCKET = "check-managed-bucket"


# --- the scratch tree ------------------------------------------------------------------------


def write_zip(path: Path, binary: str, architecture: str, *, entry: str = "bootstrap",
              mode: int = 0o755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo(entry)
        info.external_attr = mode << 16
        archive.writestr(info, f"#!/bin/sh\n# {MARKER} {binary} {architecture}\nexit 1\n")


def marker_of(path: Path) -> tuple[str, str] | None:
    """(binary, architecture) a dummy zip was made for."""
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read("bootstrap").decode()
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    found = re.search(re.escape(MARKER) + r" (\S+) (\S+)", text)
    return (found.group(1), found.group(2)) if found else None


def binaries(template: dict) -> dict[str, str]:
    return {logical: resource["Metadata"]["BuildProperties"]["Binary"]
            for logical, resource in serverless_functions(template).items()}


def architecture(template: dict, resource: dict) -> str:
    return resource.get("Properties", {}).get(
        "Architectures", template.get("Globals", {}).get("Function", {}).get("Architectures"))[0]


def make_tree(root: Path, template: dict) -> Path:
    """root/target/lambda/<arch>/<binary>/bootstrap.zip for every binary and both architectures."""
    shutil.rmtree(root, ignore_errors=True)
    target = root / "target"
    for binary in binaries(template).values():
        for arch in ARCHITECTURES:
            write_zip(target / "lambda" / arch / binary / "bootstrap.zip", binary, arch)
    return target


def derive(root: Path, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DERIVE), "--template", str(ROOT / "template.yaml"),
         "--target-dir", str(target), "--samconfig", str(root / "samconfig.toml")],
        capture_output=True, text=True, check=False)


# --- 2-4: the derived template --------------------------------------------------------------


def without_code(template: dict) -> dict:
    """template with every function's CodeUri and build metadata taken out."""
    stripped = copy.deepcopy(template)
    for resource in serverless_functions(stripped).values():
        resource.get("Properties", {}).pop("CodeUri", None)
        metadata = resource.get("Metadata")
        if isinstance(metadata, dict):
            for key in BUILD_METADATA:
                metadata.pop(key, None)
            if not metadata:
                del resource["Metadata"]
    return stripped


def first_difference(a, b, path="") -> str:
    if type(a) is not type(b):
        return f"{path or '/'}: {type(a).__name__} {a!r:.80} vs {type(b).__name__} {b!r:.80}"
    if isinstance(a, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}/{key}: only in the {'source' if key in a else 'derived'} template"
            if a[key] != b[key]:
                return first_difference(a[key], b[key], f"{path}/{key}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for index, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}/{index}")
    return f"{path or '/'}: {a!r:.80} vs {b!r:.80}"


def check_derived(source: dict, out: Path, target: Path, failures: Failures) -> dict | None:
    try:
        derived = json.loads(out.read_text())
    except (OSError, ValueError) as error:
        failures.check(False, f"{out}: not readable as JSON ({error})")
        return None
    functions = serverless_functions(derived)
    failures.check(list(functions) == list(serverless_functions(source)),
                   f"functions: {list(functions)} in the derived template, "
                   f"{list(serverless_functions(source))} in template.yaml")
    for logical, binary in binaries(source).items():
        resource = functions.get(logical, {})
        arch = architecture(source, serverless_functions(source)[logical])
        uri = resource.get("Properties", {}).get("CodeUri")
        if not failures.check(isinstance(uri, str) and uri.endswith(".zip")
                              and not os.path.isabs(uri) and "://" not in uri,
                              f"{logical}: CodeUri {uri!r} is not a relative path to a zip"):
            continue
        # As SAM CLI resolves it (samcli/lib/package/utils.py make_abs_path): against the
        # template's directory, whatever the working directory.
        resolved = Path(os.path.normpath(out.parent.resolve() / uri))
        wanted = (target / "lambda" / arch / binary / "bootstrap.zip").resolve()
        failures.check(resolved == wanted,
                       f"{logical}: CodeUri {uri} is {resolved}, not {binary}'s {arch} zip {wanted}")
        failures.check(resolved.is_file(), f"{logical}: CodeUri {uri}: {resolved} does not exist")
        made_for = marker_of(resolved)
        failures.check(made_for == (binary, arch),
                       f"{logical}: CodeUri {uri} holds {made_for}, not ({binary!r}, {arch!r})")
    for logical, resource in derived.get("Resources", {}).items():
        metadata = resource.get("Metadata", {})
        for key in BUILD_METADATA:
            failures.check(key not in metadata, f"{logical}: keeps Metadata {key}")
    a, b = without_code(source), without_code(derived)
    failures.check(a == b, f"the derived template differs from template.yaml beyond CodeUri and the "
                           f"build metadata: {first_difference(a, b) if a != b else ''}")
    return derived


def check_tools(out: Path, failures: Failures) -> None:
    for command in (["sam", "validate", "--region", "us-east-1", "-t", str(out)],
                    ["sam", "validate", "--lint", "--region", "us-east-1", "-t", str(out)],
                    ["cfn-lint", str(out)]):
        started = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        shown = " ".join(command).replace(str(ROOT) + "/", "")
        failures.check(run.returncode == 0,
                       f"{shown}: exit {run.returncode}\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
        print(f"  {shown}: exit {run.returncode} ({time.monotonic() - started:.1f} s)")


# --- 6: refusals ----------------------------------------------------------------------------


def check_refusals(source: dict, failures: Failures) -> None:
    functions = serverless_functions(source)
    logical = "ApiFunction" if "ApiFunction" in functions else next(iter(functions))
    binary = binaries(source)[logical]
    arch = architecture(source, functions[logical])
    defects = {
        "missing": lambda path: path.unlink(),
        "not a zip": lambda path: path.write_text("not a zip\n"),
        "no bootstrap": lambda path: write_zip(path, binary, arch, entry="main"),
        "bootstrap not executable": lambda path: write_zip(path, binary, arch, mode=0o644),
    }
    for name, defect in defects.items():
        root = SCRATCH / "refusals" / name.replace(" ", "-")
        target = make_tree(root, source)
        zip_file = target / "lambda" / arch / binary / "bootstrap.zip"
        defect(zip_file)
        run = derive(root, target)
        out = target / "deploy" / "template.json"
        failures.check(run.returncode == 1 and logical in run.stderr and str(zip_file) in run.stderr
                       and not out.exists(),
                       f"{name} zip: deploy-template.py exit {run.returncode}, template written: "
                       f"{out.exists()}, said {run.stderr.strip()!r}")
    print(f"  refused: {', '.join(defects)} ({logical}'s zip)")


# --- 7: the guided deploy -------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def runbook_transcript() -> list[tuple[str, str | None]]:
    """(prompt, answer) of each line of the runbook's transcript; (comment, None) for SAM CLI's
    `#...` lines. The transcript is the first ```text block of RUNBOOK_SECTION."""
    text = RUNBOOK.read_text()
    start = text.find(f"\n{RUNBOOK_SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)] if start >= 0 else ""
    block = re.search(r"^[ \t]*```text\n(.*?)^[ \t]*```", section, re.MULTILINE | re.DOTALL)
    lines = []
    for line in (block.group(1) if block else "").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            lines.append((line, None))
            continue
        found = re.fullmatch(r"(.+?):(?: (.*))?", line)
        lines.append((found.group(1), found.group(2) or "") if found else (line, ""))
    return lines


class Answers:
    """The transcript's answers, placeholders filled: <your stack name>, <your region>,
    <your alarm email>, <openssl rand -hex 32> (a new one each time), <the Parameter again>
    (what that parameter was given)."""

    def __init__(self) -> None:
        self.given: dict[str, str] = {}
        self.secrets: list[str] = []

    def value(self, prompt: str, answer: str) -> str:
        placeholder = re.fullmatch(r"<(.+)>", answer)
        if placeholder:
            name = placeholder.group(1)
            again = re.fullmatch(r"the (\w+) again", name)
            if name == "your stack name":
                answer = "wati-check"
            elif name == "your region":
                answer = "us-east-1"
            elif name == "your alarm email":
                answer = "ops@example.com"
            elif name == "openssl rand -hex 32":
                answer = secrets.token_hex(32)
                self.secrets.append(answer)
            elif again and again.group(1) in self.given:
                answer = self.given[again.group(1)]
            else:
                raise ValueError(f"transcript: {prompt}: no value for the placeholder {answer}")
        parameter = re.fullmatch(r"Parameter (\w+)(?: \[.*\])?", prompt)
        if parameter:
            self.given[parameter.group(1)] = answer
        return answer


@contextlib.contextmanager
def stood_in_aws(uploads: list, deployed: list, prompts: list):
    """SAM CLI's guided deploy with its AWS calls stood in, and every prompt recorded as shown."""
    import samcli.commands.deploy.guided_context as guided
    import samcli.lib.utils.version_checker as version_checker
    from samcli.commands.deploy.deploy_context import DeployContext
    from samcli.lib.package.s3_uploader import S3Uploader

    class NoCompanionStack:  # image functions' ECR repositories: this template has none
        def __init__(self, *args, **kwargs):
            pass

        def set_functions(self, function_ids, repositories):
            assert not function_ids, f"image functions: {function_ids}"

        def get_repository_mapping(self):
            return {}

        def get_unreferenced_repos(self):
            return []

        def sync_repos(self):
            pass

    def upload(self, file_name, remote_path):
        if self.prefix:
            remote_path = f"{self.prefix}/{remote_path}"
        uploads.append({"file": file_name, "key": remote_path,
                        "md5": hashlib.md5(Path(file_name).read_bytes()).hexdigest()})
        return self.make_url(remote_path)

    def deploy(self):
        deployed.append({"template": Path(self.template_file).read_text(),
                         "parameters": dict(self.parameter_overrides or {}),
                         "stack": self.stack_name, "capabilities": self.capabilities})

    original_prompt, original_confirm = guided.prompt, guided.confirm

    def prompt(text, default=None, **kwargs):
        shown = ANSI.sub("", text).strip()
        prompts.append(shown + (f" [{default}]" if default is not None else ""))
        return original_prompt(text, default=default, **kwargs)

    def confirm(text, default=False, **kwargs):
        shown = ANSI.sub("", text).strip()
        prompts.append(shown + {True: " [Y/n]", False: " [y/N]", None: " [y/n]"}[default])
        return original_confirm(text, default=default, **kwargs)

    with mock.patch.object(guided, "manage_stack", lambda profile=None, region=None: BUCKET), \
            mock.patch.object(guided, "CompanionStackManager", NoCompanionStack), \
            mock.patch.object(guided, "prompt", prompt), \
            mock.patch.object(guided, "confirm", confirm), \
            mock.patch.object(version_checker, "_inform_newer_version", lambda *a, **k: None), \
            mock.patch.object(S3Uploader, "upload", upload), \
            mock.patch.object(DeployContext, "run", deploy):
        yield


def guided_deploy(root: Path, template: str, answers: list[str]):
    """`sam deploy --guided --template-file template` in root, answered with answers."""
    from click.testing import CliRunner
    from samcli.cli.main import cli

    uploads: list = []
    deployed: list = []
    prompts: list = []
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with stood_in_aws(uploads, deployed, prompts):
            result = CliRunner().invoke(cli, ["deploy", "--guided", "--template-file", template],
                                        input="".join(f"{a}\n" for a in answers))
    finally:
        os.chdir(cwd)
    return result, prompts, uploads, deployed


def parameter_refusal(spec: dict, value: str) -> str | None:
    """Why CloudFormation would refuse value for this parameter, or None."""
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
        return f"does not match {spec['AllowedPattern']}"
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        return f"is not one of {spec['AllowedValues']}"
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return "is not a number"
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return f"is under {spec['MinValue']}"
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return f"is over {spec['MaxValue']}"
    return None


# What the receiver and the api function require of the secret's value at init (src/secrets.rs,
# parse_secret): a JSON object of strings; each current value at least this long, each previous
# one empty or at least this long (src/auth.rs, MIN_SECRET_LEN).
SECRET_KEYS = ("webhookSecret", "webhookSecretPrevious", "apiToken", "apiTokenPrevious")
MIN_SECRET_LEN = 16


def check_secret_value(source: dict, parameters: dict, failures: Failures) -> None:
    """The Secrets secret as CloudFormation would write it from the runbook's answers (its
    SecretString, a !Sub of the parameters): one the functions take at init, so that a deploy
    answered as the runbook says does not leave the receiver and the api failing their init."""
    string = source["Resources"].get("Secrets", {}).get("Properties", {}).get("SecretString")
    text = string.get("Fn::Sub") if isinstance(string, dict) else None
    if not failures.check(isinstance(text, str),
                          f"Secrets: SecretString is not a !Sub: {string!r:.100}"):
        return

    def value(found: re.Match) -> str:
        name = found.group(1)
        return parameters.get(name, str(source["Parameters"].get(name, {}).get("Default", "")))

    try:
        written = json.loads(re.sub(r"\$\{([A-Za-z0-9]+)\}", value, text))
    except ValueError:
        written = None
    ok = (isinstance(written, dict) and sorted(written) == sorted(SECRET_KEYS)
          and all(isinstance(v, str) for v in written.values())
          and all(len(written[key]) >= MIN_SECRET_LEN for key in SECRET_KEYS[::2])
          and all(written[key] == "" or len(written[key]) >= MIN_SECRET_LEN
                  for key in SECRET_KEYS[1::2]))
    failures.check(ok, "the secret the runbook's answers write (Secrets' SecretString) is not one "
                       "the receiver and the api function take at init: a JSON object of "
                       f"{', '.join(SECRET_KEYS)}, the current ones at least {MIN_SECRET_LEN} "
                       "characters")


def check_guided(source: dict, root: Path, target: Path, failures: Failures) -> None:
    transcript = runbook_transcript()
    if not failures.check(len(transcript) > 10, f"{RUNBOOK.name}: no ```text transcript of "
                                                f"`sam deploy --guided` under {RUNBOOK_SECTION}"):
        return
    for shown, answer in transcript:
        name = re.fullmatch(r"Parameter (\w+)(?: \[.*\])?", shown)
        if name and source["Parameters"].get(name.group(1), {}).get("NoEcho"):
            failures.check(answer != "", f"the runbook's transcript answers {name.group(1)} (NoEcho) "
                                         f"with nothing: SAM CLI takes no empty value there, asks again")
    filled = Answers()
    try:
        answers = [filled.value(p, a) for p, a in transcript if a is not None]
    except ValueError as error:
        failures.check(False, str(error))
        return
    wanted = [p for p, a in transcript if a is not None]
    comments = [p for p, a in transcript if a is None]

    template = "target/deploy/template.json"  # as `make deploy` passes it, from the root
    started = time.monotonic()
    result, prompts, uploads, deployed = guided_deploy(root, template, answers)
    output = ANSI.sub("", result.output)
    failures.check(result.exit_code == 0,
                   f"guided deploy: exit {result.exit_code} ({result.exception!r})\n{output[-3000:]}")
    for index in range(max(len(prompts), len(wanted))):
        asked = prompts[index] if index < len(prompts) else "(nothing more)"
        listed = wanted[index] if index < len(wanted) else "(nothing more)"
        if not failures.check(asked == listed,
                              f"guided prompt {index + 1}: SAM CLI asks {asked!r}, the runbook's "
                              f"transcript has {listed!r} (docs/runbook.md, {RUNBOOK_SECTION[3:]!r})"):
            break
    position = 0  # what was recorded is what SAM CLI showed, in that order
    for shown in prompts:
        found = output.find(f"{shown}:", position)
        failures.check(found >= 0, f"guided deploy: the output does not show {shown!r} there")
        position = max(position, found)
    for comment in comments:
        failures.check(comment in output, f"guided deploy: the output does not show {comment!r}")
    print(f"  guided deploy (SAM CLI in-process): {len(prompts)} prompts, as the runbook lists them "
          f"({time.monotonic() - started:.1f} s)")

    # What CloudFormation would get: the parameters, and code uploaded from the zips as they are.
    if not failures.check(len(deployed) == 1, "guided deploy: no deploy reached"):
        return
    parameters = deployed[0]["parameters"]
    for name, spec in source["Parameters"].items():
        value = parameters.get(name, str(spec.get("Default", "")))
        why = parameter_refusal(spec, value)
        failures.check(why is None, f"the runbook's answer for {name}: {value!r} {why}")
    failures.check(parameters.get("WebhookSecretPrevious") == parameters.get("WebhookSecret")
                   and parameters.get("ApiTokenPrevious") == parameters.get("ApiToken"),
                   "a first deploy's previous secret and token must repeat the current ones "
                   "(no second route, nothing else accepted)")
    failures.check(parameters.get("ForwardUrl", "") == "",
                   "a first deploy leaves ForwardUrl empty (forwarding off)")
    check_secret_value(source, parameters, failures)
    failures.check(tuple(deployed[0]["capabilities"] or ()) == ("CAPABILITY_IAM",),
                   f"capabilities {deployed[0]['capabilities']}")
    zips = {binary: (target / "lambda" / architecture(source, serverless_functions(source)[logical])
                     / binary / "bootstrap.zip").resolve()
            for logical, binary in binaries(source).items()}
    failures.check(sorted(Path(u["file"]).resolve() for u in uploads) == sorted(zips.values()),
                   f"uploaded {[u['file'] for u in uploads]}, not the {len(zips)} zips")
    from samcli.yamlhelper import yaml_parse

    packaged = yaml_parse(deployed[0]["template"])
    for logical, binary in binaries(source).items():
        md5 = hashlib.md5(zips[binary].read_bytes()).hexdigest()
        uri = packaged["Resources"][logical]["Properties"].get("CodeUri")
        failures.check(uri == f"s3://{BUCKET}/wati-check/{md5}",
                       f"{logical}: packaged CodeUri {uri}, not the upload of {binary}'s zip "
                       f"(s3://{BUCKET}/wati-check/{md5})")

    # samconfig.toml: at the root (target/deploy/'s is a link to it), no secret in it.
    link = target / "deploy" / "samconfig.toml"
    saved = root / "samconfig.toml"
    failures.check(link.is_symlink() and saved.is_file() and not saved.is_symlink(),
                   f"samconfig: {link} is not a link to {saved}, a file")
    text = saved.read_text() if saved.is_file() else ""
    failures.check('stack_name = "wati-check"' in text, f"{saved}: no stack_name: {text!r:.300}")
    failures.check(not any(s in text for s in filled.secrets), f"{saved} holds a secret")

    # A second guided deploy: the answers saved are its defaults; the NoEcho parameters are asked
    # again, an empty answer again; with the Function URL on, nothing more is asked.
    again = []
    for shown in wanted:
        name = re.fullmatch(r"Parameter (\w+)(?: \[.*\])?", shown)
        if name and source["Parameters"][name.group(1)].get("NoEcho"):
            if name.group(1) == "WebhookSecretPrevious":
                again.append("")
            again.append(parameters[name.group(1)])
        elif name and name.group(1) == "EnableFunctionUrl":
            again.append("true")
        elif "has no authentication" in shown:
            again.append("y")
        else:
            again.append("")
    result, second, uploads, deployed = guided_deploy(root, template, again)
    failures.check(result.exit_code == 0 and len(deployed) == 1,
                   f"second guided deploy: exit {result.exit_code} ({result.exception!r})")
    failures.check("Looking for config file [samconfig.toml] :  Found" in ANSI.sub("", result.output),
                   "second guided deploy: samconfig.toml not found")
    failures.check("Stack Name [wati-check]" in second,
                   f"second guided deploy: the stack name saved is not the default: {second[:2]}")
    asked = ANSI.sub("", result.output).count("Parameter WebhookSecretPrevious:")
    failures.check(asked == 2, "second guided deploy: an empty WebhookSecretPrevious was shown "
                               f"{asked} time(s), not asked again")
    bare = [re.sub(r" \[.*\]$", "", p) for p in wanted]
    failures.check([re.sub(r" \[.*\]$", "", p) for p in second] == bare,
                   f"second guided deploy (Function URL on): prompts {second}")
    if deployed:
        failures.check(deployed[0]["parameters"].get("EnableFunctionUrl") == "true",
                       "second guided deploy: EnableFunctionUrl not passed")

    # The default answer to "has no authentication" stops the deploy before anything is uploaded.
    refused = [("" if "has no authentication" in shown else answer)
               for shown, answer in zip(wanted, again)]
    result, _, uploads, deployed = guided_deploy(root, template, refused)
    failures.check(result.exit_code != 0 and not uploads and not deployed
                   and "Error: Security Constraints Not Satisfied!" in result.output,
                   f"guided deploy answering the authentication question with its default: exit "
                   f"{result.exit_code}, {len(uploads)} uploads, {len(deployed)} deploys, "
                   f"{result.output[-300:]!r}")


def main() -> int:
    started = time.monotonic()
    for variable, value in {
        "AWS_ACCESS_KEY_ID": "check", "AWS_SECRET_ACCESS_KEY": "check",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # anything not stood in fails, offline
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "SAM_CLI_TELEMETRY": "0", "__SAM_CLI_APP_DIR": str(SCRATCH / "sam-cli-app"),
    }.items():
        os.environ[variable] = value
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(variable, None)

    failures = Failures()
    source = load_template(ROOT / "template.yaml")
    root = SCRATCH / "repository"
    target = make_tree(root, source)
    run = derive(root, target)
    print(run.stdout.rstrip().replace(str(ROOT) + "/", ""))
    if failures.check(run.returncode == 0, f"deploy-template.py: exit {run.returncode}: {run.stderr}"):
        out = target / "deploy" / "template.json"
        if check_derived(source, out, target, failures) is not None:
            check_tools(out, failures)
            check_guided(source, root, target, failures)
    check_refusals(source, failures)

    return failures.summary("deploy template checks", time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
