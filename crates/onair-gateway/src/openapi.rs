//! OpenAPI 3.1 generated from the same descriptors and HTTP rules that the
//! gateway serves, so the document can't drift from the API.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json, json};

use crate::rules::{BodyMapping, RestRoute};

/// The OpenAPI 3.1 document of every route.
pub fn document(routes: &[RestRoute], title: &str, version: &str) -> Json {
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut schemas = SchemaSet::default();
    let mut operation_ids = BTreeSet::new();
    for route in routes {
        let path = openapi_path(&route.template.to_string());
        let operation = operation(route, &mut schemas, &mut operation_ids);
        paths
            .entry(path)
            .or_default()
            .insert(route.http_method.as_str().to_lowercase(), operation);
    }
    schemas.add_status();
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas.definitions,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token (JWT) from POST /v1/users or POST /v1/tokens:refresh, or an API key"
                }
            }
        },
        "security": [{"bearer": []}, {}],
    })
}

/// `/v1/{name=projects/*}:verb` → `/v1/{name}:verb`, and `{channel.id}` →
/// `{channel_id}`: the server matches paths by position, and a dotted name
/// breaks clients that format paths (Python's `str.format` reads it as an
/// attribute).
fn openapi_path(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut inside = false;
    let mut skipping = false;
    for character in template.chars() {
        match character {
            '{' => {
                inside = true;
                out.push('{');
            }
            '}' => {
                inside = false;
                skipping = false;
                out.push('}');
            }
            '=' if inside => skipping = true,
            _ if skipping => {}
            '.' if inside => out.push('_'),
            _ => out.push(character),
        }
    }
    out
}

/// The OpenAPI name of a path variable (see [`openapi_path`]).
fn parameter_name(field_path: &str) -> String {
    field_path.replace('.', "_")
}

fn operation(route: &RestRoute, schemas: &mut SchemaSet, ids: &mut BTreeSet<String>) -> Json {
    let method = &route.method;
    let service = method.parent_service();
    let mut operation_id = format!("{}_{}", service.name(), method.name());
    let mut suffix = 2;
    while !ids.insert(operation_id.clone()) {
        operation_id = format!("{}_{}{suffix}", service.name(), method.name());
        suffix += 1;
    }
    let input = method.input();
    let path_fields: Vec<String> = route.template.variables().to_vec();
    let mut parameters = Vec::new();
    for variable in &path_fields {
        let field = crate::rules::field_by_path(&input, variable);
        let schema = field
            .map(|field| schemas.field_schema(&field))
            .unwrap_or_else(|| json!({"type": "string"}));
        parameters
            .push(json!({"name": parameter_name(variable), "in": "path", "required": true, "schema": schema}));
    }
    let body_field = match &route.body {
        BodyMapping::Field(field) => Some(field.name().to_owned()),
        _ => None,
    };
    if !matches!(route.body, BodyMapping::Whole) {
        for field in input.fields() {
            let bound_by_path = path_fields.iter().any(|path| {
                path == field.name() || path.starts_with(&format!("{}.", field.name()))
            });
            if bound_by_path || body_field.as_deref() == Some(field.name()) {
                continue;
            }
            query_parameters(&field, "", schemas, &mut parameters, 0);
        }
    }
    let mut operation = Map::new();
    operation.insert("operationId".into(), json!(operation_id));
    operation.insert("tags".into(), json!([service.name()]));
    if let Some(summary) = comment_of(method) {
        operation.insert("description".into(), json!(summary));
    }
    if !parameters.is_empty() {
        operation.insert("parameters".into(), Json::Array(parameters));
    }
    let request_schema = match &route.body {
        BodyMapping::None => None,
        BodyMapping::Whole => Some(schemas.reference(&input)),
        BodyMapping::Field(field) => Some(schemas.field_schema(field)),
    };
    if let Some(schema) = request_schema {
        operation.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        );
    }
    let output = method.output();
    let response_schema = match &route.response_body {
        Some(field) => schemas.field_schema(field),
        None => schemas.reference(&output),
    };
    let content = if method.is_server_streaming() {
        let line = json!({"type": "object", "properties": {
            "result": response_schema,
            "error": {"$ref": "#/components/schemas/google.rpc.Status"}
        }});
        json!({
            "application/x-ndjson": {"schema": line},
            "text/event-stream": {"schema": {"type": "string"}}
        })
    } else {
        json!({"application/json": {"schema": response_schema}})
    };
    let mut responses = Map::new();
    responses.insert(
        route.success.as_u16().to_string(),
        json!({"description": "success", "content": content}),
    );
    responses.insert(
        "default".into(),
        json!({"description": "an error: a google.rpc.Status",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}}),
    );
    operation.insert("responses".into(), Json::Object(responses));
    Json::Object(operation)
}

/// Adds the query parameters of a field: scalars and repeated scalars by name,
/// singular messages by their dotted sub-fields.
fn query_parameters(
    field: &FieldDescriptor,
    prefix: &str,
    schemas: &mut SchemaSet,
    parameters: &mut Vec<Json>,
    depth: usize,
) {
    let name = format!("{prefix}{}", field.json_name());
    match field.kind() {
        Kind::Message(message) if !is_well_known_scalar(&message) => {
            if field.is_list() || field.is_map() || depth > 2 {
                return;
            }
            for sub_field in message.fields() {
                query_parameters(
                    &sub_field,
                    &format!("{name}."),
                    schemas,
                    parameters,
                    depth + 1,
                );
            }
        }
        _ => {
            let mut parameter =
                json!({"name": name, "in": "query", "schema": schemas.field_schema(field)});
            if field.is_list() {
                parameter["explode"] = json!(true);
            }
            parameters.push(parameter);
        }
    }
}

fn is_well_known_scalar(message: &MessageDescriptor) -> bool {
    well_known_schema(message.full_name()).is_some()
}

fn well_known_schema(full_name: &str) -> Option<Json> {
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$", "examples": ["1800s"]})
        }
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "comma-separated field paths"})
        }
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.Any" => {
            json!({"type": "object", "properties": {"@type": {"type": "string"}}})
        }
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => {
            json!({"type": ["string", "null"]})
        }
        "google.protobuf.BoolValue" => json!({"type": ["boolean", "null"]}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": ["integer", "null"]})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": ["string", "null"], "format": "int64"})
        }
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
            json!({"type": ["number", "null"]})
        }
        _ => return None,
    })
}

fn comment_of(method: &prost_reflect::MethodDescriptor) -> Option<String> {
    let file = method.parent_file();
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let path = method.path();
    let location = info
        .location
        .iter()
        .find(|location| location.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The component schemas referenced so far.
#[derive(Default)]
struct SchemaSet {
    definitions: BTreeMap<String, Json>,
}

impl SchemaSet {
    fn reference(&mut self, message: &MessageDescriptor) -> Json {
        if let Some(schema) = well_known_schema(message.full_name()) {
            return schema;
        }
        let name = message.full_name().to_owned();
        if !self.definitions.contains_key(&name) {
            // Reserve the name first: messages may refer to themselves.
            self.definitions.insert(name.clone(), json!({}));
            let schema = self.message_schema(message);
            self.definitions.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn message_schema(&mut self, message: &MessageDescriptor) -> Json {
        let mut properties = Map::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_owned(), self.field_schema(&field));
        }
        json!({"type": "object", "properties": properties})
    }

    fn field_schema(&mut self, field: &FieldDescriptor) -> Json {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            };
            let value_schema = self.kind_schema(&value);
            return json!({"type": "object", "additionalProperties": value_schema});
        }
        let item = self.kind_schema(&field.kind());
        if field.is_list() {
            json!({"type": "array", "items": item})
        } else {
            item
        }
    }

    fn kind_schema(&mut self, kind: &Kind) -> Json {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int32", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "int64"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(enumeration) => {
                let names: Vec<String> = enumeration
                    .values()
                    .map(|value| value.name().to_owned())
                    .collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(message) => self.reference(message),
        }
    }

    fn add_status(&mut self) {
        self.definitions.insert(
            "google.rpc.Status".to_owned(),
            json!({"type": "object", "properties": {
                "code": {"type": "integer", "format": "int32", "description": "a google.rpc.Code"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}}
            }}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_variables_become_parameters() {
        assert_eq!(
            openapi_path("/v1/users/{user_id}:ban"),
            "/v1/users/{user_id}:ban"
        );
        assert_eq!(openapi_path("/v1/{name=projects/*/topics/*}"), "/v1/{name}");
        // Dotted names become underscores, which every client can format.
        assert_eq!(
            openapi_path("/v1/channels/{channel.id}"),
            "/v1/channels/{channel_id}"
        );
    }
}
