//! The TwitterStream field reference in docs/reference.md, generated from the
//! CRD's OpenAPI schema: the descriptions are the doc comments in `crd.rs` and
//! the constraints are the ones the apiserver enforces, so the documentation
//! cannot drift from either. `cargo xtask docs` rewrites the region; a unit
//! test fails while it is stale.
//!
//! Embedded Kubernetes types (affinity, tolerations, resources, conditions)
//! are not expanded: a schema whose properties have exactly the names and
//! descriptions of a known k8s-openapi type is shown as, e.g.,
//! `object (core/v1 Affinity)`. Matching on the schema itself, rather than on
//! a list of field paths, keeps the rule right when fields move or are added.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, ValidationRule,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The marker pair this module's output goes between.
pub const REGION: &str = "crd-reference";

/// The page (under docs/) that holds the region.
pub const PAGE: &str = "reference.md";

/// The command that regenerates the region.
pub const REFRESH_COMMAND: &str = "cargo xtask docs";

/// The field reference of a CRD's storage version (else its first version)
/// as Markdown: one table per object, with `### <path>` headings.
pub fn markdown(crd: &CustomResourceDefinition) -> String {
    markdown_with(crd, &known_types())
}

fn markdown_with(crd: &CustomResourceDefinition, known: &[KnownType]) -> String {
    let spec = &crd.spec;
    let version = spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or_else(|| spec.versions.first());
    let mut out = String::new();
    let short = spec
        .names
        .short_names
        .as_ref()
        .and_then(|s| s.first())
        .map(|s| format!(", short name `{s}`"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Kind `{}` (plural `{}`{short}) in API group `{}`, version `{}`, {} scope. Generated from the CRD's \
         OpenAPI schema: defaults are filled in and constraints and rules are checked by the apiserver when a \
         resource is created or updated.",
        spec.names.kind,
        spec.names.plural,
        spec.group,
        version.map(|v| v.name.as_str()).unwrap_or("?"),
        spec.scope.to_lowercase(),
    );
    let Some(root) = version.and_then(root_schema) else {
        out.push_str("\nThe CRD has no schema.\n");
        return out;
    };
    let whole = rules(root);
    if !whole.is_empty() {
        out.push_str("\nRules of the whole resource:\n\n");
        for r in &whole {
            let _ = writeln!(out, "- {r}");
        }
    }
    let mut sections = Vec::new();
    for (name, prop) in root.properties.iter().flatten() {
        // Every Kubernetes object has these; they are not this CRD's to document.
        if matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        collect(name, prop, known, &mut sections);
    }
    for s in &sections {
        render_section(&mut out, s);
    }
    out
}

fn root_schema(v: &CustomResourceDefinitionVersion) -> Option<&JSONSchemaProps> {
    v.schema.as_ref()?.open_api_v3_schema.as_ref()
}

/// A Kubernetes type whose schema is recognised and not expanded.
pub(crate) struct KnownType {
    /// Shown in the type column, e.g. `core/v1 Affinity`.
    pub(crate) label: String,
    /// Its properties' names and descriptions.
    pub(crate) properties: BTreeMap<String, Option<String>>,
}

impl KnownType {
    pub(crate) fn of<T: schemars::JsonSchema>() -> Self {
        let schema = schemars::schema_for!(T);
        let properties = schema
            .as_object()
            .and_then(|o| o.get("properties"))
            .and_then(|p| p.as_object())
            .map(|props| {
                props
                    .iter()
                    .map(|(k, v)| {
                        let d = v.get("description").and_then(|d| d.as_str());
                        (k.clone(), d.map(str::to_owned))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            label: k8s_label(&T::schema_name()),
            properties,
        }
    }

    fn matches(&self, schema: &JSONSchemaProps) -> bool {
        let Some(props) = &schema.properties else {
            return false;
        };
        !props.is_empty()
            && props.len() == self.properties.len()
            && props
                .iter()
                .all(|(k, p)| self.properties.get(k) == Some(&p.description))
    }
}

/// `io.k8s.api.core.v1.Affinity` -> `core/v1 Affinity`.
fn k8s_label(schema_name: &str) -> String {
    let parts: Vec<&str> = schema_name.split('.').collect();
    match parts.as_slice() {
        [.., group, version, kind] => format!("{group}/{version} {kind}"),
        _ => schema_name.to_string(),
    }
}

/// The Kubernetes types a pod-shaped spec commonly embeds.
pub(crate) fn known_types() -> Vec<KnownType> {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    vec![
        KnownType::of::<core::Affinity>(),
        KnownType::of::<core::Toleration>(),
        KnownType::of::<core::ResourceRequirements>(),
        KnownType::of::<core::LocalObjectReference>(),
        KnownType::of::<core::EnvVar>(),
        KnownType::of::<core::SecurityContext>(),
        KnownType::of::<core::PodSecurityContext>(),
        KnownType::of::<core::TopologySpreadConstraint>(),
        KnownType::of::<core::Volume>(),
        KnownType::of::<core::VolumeMount>(),
        KnownType::of::<meta::Condition>(),
        KnownType::of::<meta::LabelSelector>(),
        KnownType::of::<meta::ObjectMeta>(),
    ]
}

struct Section {
    path: String,
    description: Option<String>,
    rules: Vec<String>,
    rows: Vec<Row>,
}

struct Row {
    path: String,
    type_: String,
    required: bool,
    default: Option<String>,
    constraints: Vec<String>,
    description: Option<String>,
}

/// Adds the section of the object at `path` and, after it, the sections of
/// the objects below it.
fn collect(path: &str, schema: &JSONSchemaProps, known: &[KnownType], out: &mut Vec<Section>) {
    let required = schema.required.clone().unwrap_or_default();
    let mut rows = Vec::new();
    let mut children = Vec::new();
    for (name, prop) in schema.properties.iter().flatten() {
        let field = format!("{path}.{name}");
        let (type_, child) = describe_type(&field, prop, known);
        let mut constraints = constraints(prop);
        if child.as_ref().is_none_or(|(p, _)| p != &field) {
            // No section of its own (a leaf, or rules on the array holding
            // the objects): the rules go next to the field.
            constraints.extend(rules(prop).into_iter().map(|r| format!("rule: {r}")));
        }
        if let Some(child) = child {
            children.push(child);
        }
        rows.push(Row {
            path: field,
            type_,
            required: required.contains(name),
            default: prop.default.as_ref().map(|d| value(&d.0)),
            constraints,
            description: prop.description.clone(),
        });
    }
    out.push(Section {
        path: path.to_string(),
        description: schema.description.clone(),
        rules: rules(schema),
        rows,
    });
    for (child_path, child) in children {
        collect(&child_path, child, known, out);
    }
}

/// The type column of a field and, when it is an object with its own fields,
/// the path and schema of the section that lists them.
fn describe_type<'a>(
    path: &str,
    s: &'a JSONSchemaProps,
    known: &[KnownType],
) -> (String, Option<(String, &'a JSONSchemaProps)>) {
    if let Some(k) = known.iter().find(|k| k.matches(s)) {
        return (format!("object ({})", k.label), None);
    }
    match s.type_.as_deref() {
        Some("array") => {
            let Some(JSONSchemaPropsOrArray::Schema(items)) = &s.items else {
                return ("array".to_string(), None);
            };
            let item_path = format!("{path}[]");
            let (t, child) = describe_type(&item_path, items, known);
            (format!("[]{t}"), child)
        }
        Some("object") if s.properties.as_ref().is_some_and(|p| !p.is_empty()) => {
            ("object".to_string(), Some((path.to_string(), s)))
        }
        Some("object") => match &s.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) => {
                let (t, child) = describe_type(&format!("{path}.*"), values, known);
                (format!("map[string]{t}"), child)
            }
            Some(JSONSchemaPropsOrBool::Bool(true)) => ("map[string]any".to_string(), None),
            _ => ("object (free-form)".to_string(), None),
        },
        _ => (scalar_type(s), None),
    }
}

fn scalar_type(s: &JSONSchemaProps) -> String {
    let mut t = if s.x_kubernetes_int_or_string == Some(true) {
        "int-or-string".to_string()
    } else {
        s.type_.clone().unwrap_or_else(|| "any".to_string())
    };
    if let Some(f) = &s.format {
        let _ = write!(t, " ({f})");
    }
    if let Some(values) = &s.enum_ {
        let values: Vec<String> = values.iter().map(|v| value(&v.0)).collect();
        let _ = write!(t, ", one of {}", values.join(", "));
    }
    t
}

/// The constraints of one schema, as short phrases. Array items and map
/// values contribute theirs with an "each item" / "each value" prefix unless
/// they get a section of their own.
fn constraints(s: &JSONSchemaProps) -> Vec<String> {
    let mut c = Vec::new();
    let bound = |v: f64, exclusive: Option<bool>| {
        if exclusive == Some(true) {
            format!("{} (exclusive)", number(v))
        } else {
            number(v)
        }
    };
    match (s.minimum, s.maximum) {
        (Some(lo), Some(hi)) => c.push(format!(
            "min {}, max {}",
            bound(lo, s.exclusive_minimum),
            bound(hi, s.exclusive_maximum)
        )),
        (Some(lo), None) => c.push(format!("min {}", bound(lo, s.exclusive_minimum))),
        (None, Some(hi)) => c.push(format!("max {}", bound(hi, s.exclusive_maximum))),
        (None, None) => {}
    }
    if let Some(m) = s.multiple_of {
        c.push(format!("multiple of {}", number(m)));
    }
    if let Some(r) = range("length", s.min_length, s.max_length) {
        c.push(r);
    }
    if let Some(r) = range("items", s.min_items, s.max_items) {
        c.push(r);
    }
    if let Some(r) = range("entries", s.min_properties, s.max_properties) {
        c.push(r);
    }
    if s.unique_items == Some(true) {
        c.push("unique items".to_string());
    }
    if let Some(p) = &s.pattern {
        c.push(format!("pattern {}", code(p)));
    }
    let nested = match (&s.items, &s.additional_properties) {
        (Some(JSONSchemaPropsOrArray::Schema(items)), _) => Some(("each item", items)),
        (_, Some(JSONSchemaPropsOrBool::Schema(values))) => Some(("each value", values)),
        _ => None,
    };
    if let Some((prefix, inner)) = nested
        && inner.properties.as_ref().is_none_or(|p| p.is_empty())
    {
        let mut inner_c = constraints(inner);
        inner_c.extend(rules(inner).into_iter().map(|r| format!("rule: {r}")));
        c.extend(inner_c.into_iter().map(|x| format!("{prefix}: {x}")));
    }
    c
}

fn range(what: &str, min: Option<i64>, max: Option<i64>) -> Option<String> {
    Some(match (min, max) {
        (Some(lo), Some(hi)) if lo == hi => format!("{what} exactly {lo}"),
        (Some(lo), Some(hi)) => format!("{what} {lo} to {hi}"),
        (Some(lo), None) => format!("{what} at least {lo}"),
        (None, Some(hi)) => format!("{what} at most {hi}"),
        (None, None) => return None,
    })
}

/// The CEL rules of a schema, by their messages (the rule itself when it has none).
fn rules(s: &JSONSchemaProps) -> Vec<String> {
    s.x_kubernetes_validations
        .iter()
        .flatten()
        .map(rule_text)
        .collect()
}

fn rule_text(r: &ValidationRule) -> String {
    match (&r.message, &r.message_expression) {
        (Some(m), _) if !m.is_empty() => m.clone(),
        (_, Some(e)) => format!("{} (message: {})", code(&r.rule), code(e)),
        _ => code(&r.rule),
    }
}

/// Integral bounds print as integers (the schema stores them as floats).
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A JSON value as inline code: strings bare, everything else as compact JSON.
fn value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => code(s),
        other => code(&other.to_string()),
    }
}

/// Inline code that survives backticks in the text.
fn code(s: &str) -> String {
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// Text for one table cell: on one line, with `|` escaped (GitHub applies
/// the escape inside code spans too).
fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn render_section(out: &mut String, s: &Section) {
    let _ = writeln!(out, "\n### `{}`\n", s.path);
    if let Some(d) = &s.description {
        let _ = writeln!(out, "{}\n", one_line(d));
    }
    if !s.rules.is_empty() {
        out.push_str("Rules:\n\n");
        for r in &s.rules {
            let _ = writeln!(out, "- {r}");
        }
        out.push('\n');
    }
    out.push_str("| field | type | required | default | constraints | description |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for r in &s.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&code(&r.path)),
            cell(&r.type_),
            if r.required { "yes" } else { "" },
            r.default.as_deref().map(cell).unwrap_or_default(),
            cell(&r.constraints.join("; ")),
            r.description.as_deref().map(cell).unwrap_or_default(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readme::{doc_path, region, same_contents};

    fn crd(schema: serde_json::Value) -> CustomResourceDefinition {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": "widgets.example.com" },
            "spec": {
                "group": "example.com",
                "names": { "kind": "Widget", "plural": "widgets", "shortNames": ["wd"] },
                "scope": "Namespaced",
                "versions": [
                    { "name": "v1beta1", "served": true, "storage": false,
                      "schema": { "openAPIV3Schema": { "type": "object" } } },
                    { "name": "v1", "served": true, "storage": true,
                      "schema": { "openAPIV3Schema": schema } }
                ]
            }
        }))
        .expect("a valid CRD")
    }

    fn widget() -> CustomResourceDefinition {
        crd(serde_json::json!({
            "type": "object",
            "x-kubernetes-validations": [
                { "rule": "size(self.metadata.name) <= 20", "message": "names are at most 20 characters" }
            ],
            "properties": {
                "apiVersion": { "type": "string" },
                "spec": {
                    "type": "object",
                    "description": "What the widget\nshould be.",
                    "required": ["name"],
                    "x-kubernetes-validations": [
                        { "rule": "self.size <= 10 || self.mode == 'big'", "message": "size above 10 needs mode big" },
                        { "rule": "has(self.name)" }
                    ],
                    "properties": {
                        "name": {
                            "type": "string", "description": "Name | label of it.",
                            "minLength": 1, "maxLength": 63, "pattern": "^[a-z]+$",
                            "x-kubernetes-validations": [ { "rule": "self != 'x'", "message": "name must not be x" } ]
                        },
                        "mode": {
                            "type": "string", "description": "How big.", "default": "small",
                            "enum": ["small", "big"]
                        },
                        "size": {
                            "type": "integer", "format": "int32", "description": "Units.",
                            "minimum": 0.0, "maximum": 100.0, "default": 3
                        },
                        "ratio": { "type": "number", "format": "double", "exclusiveMinimum": true, "minimum": 0.5 },
                        "hosts": {
                            "type": "array", "description": "Hosts.", "minItems": 1, "maxItems": 8,
                            "items": { "type": "string", "minLength": 3 }
                        },
                        "labels": {
                            "type": "object", "description": "Labels.",
                            "additionalProperties": { "type": "string" }
                        },
                        "quota": { "x-kubernetes-int-or-string": true, "description": "Quota." },
                        "parts": {
                            "type": "array", "description": "Parts.",
                            "items": {
                                "type": "object", "description": "One part.", "required": ["id"],
                                "x-kubernetes-validations": [ { "rule": "self.id > 0", "message": "id must be positive" } ],
                                "properties": { "id": { "type": "integer", "description": "Part id." } }
                            }
                        },
                        "inner": {
                            "type": "object", "description": "Inner settings.", "default": { "on": true },
                            "properties": { "on": { "type": "boolean", "description": "Switch.", "default": true } }
                        }
                    }
                },
                "status": {
                    "type": "object", "description": "Observed.", "nullable": true,
                    "properties": { "phase": { "type": "string", "description": "Phase." } }
                }
            }
        }))
    }

    #[test]
    fn renders_a_hand_made_schema() {
        let expected = "\
Kind `Widget` (plural `widgets`, short name `wd`) in API group `example.com`, version `v1`, namespaced scope. Generated from the CRD's OpenAPI schema: defaults are filled in and constraints and rules are checked by the apiserver when a resource is created or updated.

Rules of the whole resource:

- names are at most 20 characters

### `spec`

What the widget should be.

Rules:

- size above 10 needs mode big
- `has(self.name)`

| field | type | required | default | constraints | description |
| --- | --- | --- | --- | --- | --- |
| `spec.hosts` | []string |  |  | items 1 to 8; each item: length at least 3 | Hosts. |
| `spec.inner` | object |  | `{\"on\":true}` |  | Inner settings. |
| `spec.labels` | map[string]string |  |  |  | Labels. |
| `spec.mode` | string, one of `small`, `big` |  | `small` |  | How big. |
| `spec.name` | string | yes |  | length 1 to 63; pattern `^[a-z]+$`; rule: name must not be x | Name \\| label of it. |
| `spec.parts` | []object |  |  |  | Parts. |
| `spec.quota` | int-or-string |  |  |  | Quota. |
| `spec.ratio` | number (double) |  |  | min 0.5 (exclusive) |  |
| `spec.size` | integer (int32) |  | `3` | min 0, max 100 | Units. |

### `spec.inner`

Inner settings.

| field | type | required | default | constraints | description |
| --- | --- | --- | --- | --- | --- |
| `spec.inner.on` | boolean |  | `true` |  | Switch. |

### `spec.parts[]`

One part.

Rules:

- id must be positive

| field | type | required | default | constraints | description |
| --- | --- | --- | --- | --- | --- |
| `spec.parts[].id` | integer | yes |  |  | Part id. |

### `status`

Observed.

| field | type | required | default | constraints | description |
| --- | --- | --- | --- | --- | --- |
| `status.phase` | string |  |  |  | Phase. |
";
        let got = markdown_with(&widget(), &[]);
        assert!(got == expected, "got:\n{got}\n--- expected:\n{expected}");
    }

    #[test]
    fn known_kubernetes_types_are_not_expanded() {
        let toleration = serde_json::to_value(schemars::schema_for!(
            k8s_openapi::api::core::v1::Toleration
        ))
        .unwrap();
        let mut almost = toleration.clone();
        almost["properties"]["key"]["description"] = "Something else.".into();
        let doc = crd(serde_json::json!({
            "type": "object",
            "properties": { "spec": { "type": "object", "properties": {
                "tolerations": { "type": "array", "description": "Tolerations.", "items": toleration },
                "lookalike": { "type": "array", "description": "Not one.", "items": almost }
            } } }
        }));
        let known = [KnownType::of::<k8s_openapi::api::core::v1::Toleration>()];
        let got = markdown_with(&doc, &known);
        assert!(
            got.contains("| `spec.tolerations` | []object (core/v1 Toleration) |"),
            "{got}"
        );
        assert!(!got.contains("spec.tolerations[]"), "{got}");
        // Same names, one description differs: it is not the known type.
        assert!(got.contains("### `spec.lookalike[]`"), "{got}");
    }

    #[test]
    fn twitterstream_reference_covers_every_field_and_rule() {
        let crd = twitterstream_operator::crd::definition();
        let got = markdown(&crd);
        for needle in [
            "### `spec.kafka`",
            "| `spec.kafka.brokers` | []string | yes |  | items 1 to 64; each item: length 3 to 261; rule: each kafka.brokers entry must be host:port, e.g. kafka-0.kafka:9092 | Bootstrap brokers as `host:port`. |",
            "| `spec.source` | string, one of `x-search`, `x-stream`, `replay`, `synthetic` |  | `x-search` |",
            "| `spec.window.seconds` | integer (int64) |  | `10` | min 1, max 86400 | Window length in seconds. |",
            "- kafka.outputTopic must differ from kafka.topic",
            "- consumer.replicas must not exceed kafka.partitions",
            "Rules of the whole resource:\n\n- metadata.name must be at most 63 characters",
            "| `spec.podTemplate.affinity` | object (core/v1 Affinity) |",
            "| `spec.podTemplate.tolerations` | []object (core/v1 Toleration) |",
            "| `spec.consumer.resources` | object (core/v1 ResourceRequirements) |",
            "| `status.conditions` | []object (meta/v1 Condition) |",
            "### `status.topic`",
        ] {
            assert!(got.contains(needle), "missing {needle:?} in\n{got}");
        }
        // Embedded types stay collapsed.
        for absent in [
            "nodeAffinity",
            "tolerationSeconds",
            "claims",
            "lastTransitionTime",
        ] {
            assert!(!got.contains(absent), "{absent} expanded in\n{got}");
        }
        // Every field the schema describes has its description in the table.
        let missing: Vec<_> = got
            .lines()
            .filter(|l| l.starts_with("| `") && l.ends_with("|  |"))
            .collect();
        assert!(
            missing.is_empty(),
            "fields without description: {missing:#?}"
        );
    }

    #[test]
    fn docs_reference_is_up_to_date() {
        let page = std::fs::read_to_string(doc_path(PAGE)).expect("docs/reference.md exists");
        let current =
            region(&page, REGION).expect("docs/reference.md has the crd-reference markers");
        let want = markdown(&twitterstream_operator::crd::definition());
        assert!(
            same_contents(current, &want),
            "docs/{PAGE}'s TwitterStream reference is stale: run `{REFRESH_COMMAND}`"
        );
    }
}
