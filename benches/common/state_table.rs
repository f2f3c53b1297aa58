//! The template's `StateTable` on DynamoDB Local, for benches that need only it: its key schema,
//! attribute definitions, billing mode and indexes from `template.yaml` (no stream, no TTL).
//! A minimal copy of what the contract suite's `Stack` does (benches do not import test code).
//! Included by path (`#[path = "common/state_table.rs"] mod state_table;`).

use std::path::Path;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use serde_yaml::Value;

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn key_schema(value: &Value) -> Vec<KeySchemaElement> {
    value
        .as_sequence()
        .expect("KeySchema")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(scalar(&k["AttributeName"]))
                .key_type(KeyType::from(scalar(&k["KeyType"]).as_str()))
                .build()
                .expect("key schema")
        })
        .collect()
}

/// Creates the template's `StateTable` as `name`.
pub async fn create_state_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let template: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml"))
            .expect("template.yaml"),
    )
    .expect("template.yaml parses");
    let properties = &template["Resources"]["StateTable"]["Properties"];
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(
            scalar(&properties["BillingMode"]).as_str(),
        ))
        .set_key_schema(Some(key_schema(&properties["KeySchema"])));
    for definition in properties["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions")
    {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(scalar(&definition["AttributeName"]))
                .attribute_type(ScalarAttributeType::from(
                    scalar(&definition["AttributeType"]).as_str(),
                ))
                .build()
                .expect("attribute definition"),
        );
    }
    for index in properties["GlobalSecondaryIndexes"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(scalar(&index["IndexName"]))
                .set_key_schema(Some(key_schema(&index["KeySchema"])))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            scalar(&index["Projection"]["ProjectionType"]).as_str(),
                        ))
                        .build(),
                )
                .build()
                .expect("index"),
        );
    }
    create.send().await.expect("create the state table");
}
