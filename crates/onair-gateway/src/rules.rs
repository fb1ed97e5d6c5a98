//! The REST routes of every annotated RPC, read from the descriptor set.

use http::{Method, StatusCode};
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, MethodDescriptor, Value};

use crate::template::{PathTemplate, TemplateError};

/// Where a route's request body goes.
#[derive(Debug, Clone)]
pub enum BodyMapping {
    /// No body: every field not bound by the path comes from the query.
    None,
    /// `body: "*"`: the body is the request message, minus path fields.
    Whole,
    /// `body: "field"`: the body is one top-level field; the rest come from the
    /// query.
    Field(FieldDescriptor),
}

/// One HTTP binding of one RPC.
#[derive(Debug, Clone)]
pub struct RestRoute {
    /// The HTTP method of the binding: `get`, `put`, `post`, `delete`,
    /// `patch`, or a `custom` rule's kind.
    pub http_method: Method,
    /// The path the binding serves, such as `/v1/channels/{channel_id}`.
    pub template: PathTemplate,
    /// Where the request body goes.
    pub body: BodyMapping,
    /// `response_body`: the response field sent instead of the whole message.
    pub response_body: Option<FieldDescriptor>,
    /// The RPC the route calls.
    pub method: MethodDescriptor,
    /// 200, or what `onair.api.http_success_code` says.
    pub success: StatusCode,
    /// The RPC's gRPC path, `/package.Service/Method`.
    pub grpc_path: http::uri::PathAndQuery,
}

/// Why an RPC's `google.api.http` rule cannot be served. One such rule fails
/// the whole descriptor set.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The rule's path template does not parse.
    #[error("{method}: {source}")]
    Template {
        /// The RPC's full name, `package.Service.Method`.
        method: String,
        /// What is wrong with the template.
        #[source]
        source: TemplateError,
    },
    /// Anything else wrong with the rule, such as no pattern, a custom kind
    /// that is not an HTTP method, a path variable, `body` or `response_body`
    /// that names no field of its message, or an `onair.api.http_success_code`
    /// that is not an HTTP status.
    #[error("{method}: {reason}")]
    Invalid {
        /// The RPC's full name, `package.Service.Method`.
        method: String,
        /// What is wrong, in words.
        reason: String,
    },
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Every REST route of every service in `pool`, in declaration order.
pub fn routes_from_pool(pool: &DescriptorPool) -> Result<Vec<RestRoute>, RuleError> {
    let Some(http_extension) = pool.get_extension_by_name("google.api.http") else {
        return Ok(Vec::new());
    };
    let success_extension = pool.get_extension_by_name("onair.api.http_success_code");
    let mut routes = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http_extension) {
                continue;
            }
            if method.is_client_streaming() {
                tracing::warn!(method = %method.full_name(), "client-streaming RPCs are not served over REST");
                continue;
            }
            let success = match &success_extension {
                Some(extension) if options.has_extension(extension) => {
                    let code = options.get_extension(extension).as_i32().unwrap_or(200);
                    StatusCode::from_u16(u16::try_from(code).unwrap_or(200)).map_err(|_| {
                        RuleError::Invalid {
                            method: method.full_name().to_owned(),
                            reason: format!("http_success_code {code} is not an HTTP status"),
                        }
                    })?
                }
                _ => StatusCode::OK,
            };
            let rule = options.get_extension(&http_extension);
            let Value::Message(rule) = rule.as_ref() else {
                continue;
            };
            routes.push(route_from_rule(&method, rule, success)?);
            if let Some(additional) = rule.get_field_by_name("additional_bindings")
                && let Some(bindings) = additional.as_list()
            {
                for binding in bindings {
                    if let Some(binding) = binding.as_message() {
                        routes.push(route_from_rule(&method, binding, success)?);
                    }
                }
            }
        }
    }
    Ok(routes)
}

fn route_from_rule(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    success: StatusCode,
) -> Result<RestRoute, RuleError> {
    let invalid = |reason: String| RuleError::Invalid {
        method: method.full_name().to_owned(),
        reason,
    };
    let mut pattern = None;
    for (name, http_method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        let path = string_field(rule, name);
        if !path.is_empty() {
            pattern = Some((http_method, path));
        }
    }
    if pattern.is_none()
        && let Some(custom) = rule.get_field_by_name("custom")
        && let Some(custom) = custom.as_message()
    {
        let kind = string_field(custom, "kind");
        let path = string_field(custom, "path");
        if !kind.is_empty() && !path.is_empty() {
            let http_method = Method::from_bytes(kind.as_bytes())
                .map_err(|_| invalid(format!("custom method {kind:?} is not an HTTP method")))?;
            pattern = Some((http_method, path));
        }
    }
    let Some((http_method, path)) = pattern else {
        return Err(invalid("the http rule has no pattern".to_owned()));
    };
    let template = PathTemplate::parse(&path).map_err(|source| RuleError::Template {
        method: method.full_name().to_owned(),
        source,
    })?;
    let input = method.input();
    for variable in template.variables() {
        if field_by_path(&input, variable).is_none() {
            return Err(invalid(format!(
                "path variable {variable} is not a field of {}",
                input.full_name()
            )));
        }
    }
    let body = match string_field(rule, "body").as_str() {
        "" => BodyMapping::None,
        "*" => BodyMapping::Whole,
        field => BodyMapping::Field(input.get_field_by_name(field).ok_or_else(|| {
            invalid(format!(
                "body field {field} is not a field of {}",
                input.full_name()
            ))
        })?),
    };
    let response_body = match string_field(rule, "response_body").as_str() {
        "" => None,
        field => Some(method.output().get_field_by_name(field).ok_or_else(|| {
            invalid(format!(
                "response_body {field} is not a field of the response"
            ))
        })?),
    };
    let grpc_path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let grpc_path = http::uri::PathAndQuery::try_from(grpc_path.as_str())
        .map_err(|error| invalid(format!("{grpc_path} is not a gRPC path: {error}")))?;
    Ok(RestRoute {
        http_method,
        template,
        body,
        response_body,
        method: method.clone(),
        success,
        grpc_path,
    })
}

/// The field at a dotted path (`channel.id`), by proto name.
pub fn field_by_path(
    message: &prost_reflect::MessageDescriptor,
    path: &str,
) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(name) = parts.next() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))?;
        if parts.peek().is_none() {
            return Some(field);
        }
        current = field.kind().as_message()?.clone();
    }
    None
}
