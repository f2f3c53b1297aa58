"""template.yaml as data: the YAML loader the deploy scripts share.

Imported by scripts/deploy-rehearsal.py (the rehearsal's venv), scripts/deploy-template.py and
scripts/check-deploy-template.py (the tools' venv); needs only PyYAML, which both venvs have.

`load_template` reads a CloudFormation/SAM template with its short-form intrinsics (`!Ref`,
`!Sub`, `!GetAtt`, ...) in their long form (`{"Ref": ...}`, `{"Fn::Sub": ...}`,
`{"Fn::GetAtt": [resource, attribute]}`), i.e. the JSON form CloudFormation and the SAM
translator work on, and keeps a YAML timestamp (an unquoted `2012-10-17`) as the string it is
written as, as SAM CLI's own parser does (samcli/yamlhelper.py): the JSON form has no dates.
A JSON template (JSON is YAML) reads the same way.
"""

from __future__ import annotations

from pathlib import Path

INTRINSICS = ["Ref", "Condition", "GetAtt", "Sub", "If", "Equals", "Not", "And", "Or", "Join",
              "Select", "Split", "FindInMap", "GetAZs", "ImportValue", "Base64", "Cidr",
              "ToJsonString", "Length"]


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(tag: str):
        def construct(loader, node):
            if isinstance(node, yaml.ScalarNode):
                value = loader.construct_scalar(node)
            elif isinstance(node, yaml.SequenceNode):
                value = loader.construct_sequence(node, deep=True)
            else:
                value = loader.construct_mapping(node, deep=True)
            if tag == "Ref":
                return {"Ref": value}
            if tag == "Condition":
                return {"Condition": value}
            if tag == "GetAtt" and isinstance(value, str):
                return {"Fn::GetAtt": value.split(".", 1)}
            return {f"Fn::{tag}": value}

        return construct

    for tag in INTRINSICS:
        Loader.add_constructor(f"!{tag}", intrinsic(tag))
    Loader.add_constructor("tag:yaml.org,2002:timestamp",
                           yaml.SafeLoader.yaml_constructors["tag:yaml.org,2002:str"])
    return Loader


def parse_template(text: str) -> dict:
    """A template's text (YAML or JSON) as CloudFormation's JSON form."""
    import yaml

    return yaml.load(text, Loader=_loader())


def load_template(path: Path) -> dict:
    """template.yaml with its short-form intrinsics (!Ref, !Sub, ...) in their long form."""
    return parse_template(Path(path).read_text())


def serverless_functions(template: dict) -> dict[str, dict]:
    """Logical id -> resource of every AWS::Serverless::Function, in template order."""
    return {
        logical: resource
        for logical, resource in template.get("Resources", {}).items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }
