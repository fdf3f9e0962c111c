//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates
//! prost messages plus tonic stubs. The descriptor set is written to `OUT_DIR`
//! so the server can offer gRPC reflection.
//!
//! Every generated message also derives `serde::Serialize`, so the REST
//! gateway and `lifecyclectl --json` print the same shapes as gRPC without a
//! second hand-written model. Timestamps serialize as RFC 3339 strings and
//! enum fields as their short lower-case names; the attributes for that are
//! derived from the descriptors here rather than listed by hand, so a new
//! field cannot be forgotten.

use std::{env, fmt::Write as _, path::PathBuf};

use prost::Message as _;
use protox::prost_reflect::prost_types::{
    field_descriptor_proto::{Label, Type},
    FileDescriptorSet,
};

const PACKAGE: &str = ".valence.lifecycle.v1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/valence/lifecycle/v1/types.proto",
        "proto/valence/lifecycle/v1/events.proto",
        "proto/valence/lifecycle/v1/lifecycle_service.proto",
        "proto/valence/lifecycle/v1/rule_service.proto",
        "proto/valence/lifecycle/v1/singleton_admin_service.proto",
        "proto/valence/lifecycle/v1/event_stream_service.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("valence_lifecycle_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    std::fs::write(out_dir.join("enum_names.rs"), enum_impls(&fds))?;

    let mut config = tonic_prost_build::configure()
        .build_client(env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(env::var_os("CARGO_FEATURE_SERVER").is_some())
        .type_attribute(PACKAGE, "#[derive(serde::Serialize)]")
        .type_attribute(PACKAGE, "#[serde(rename_all = \"snake_case\")]");
    for (path, attribute) in field_attributes(&fds) {
        config = config.field_attribute(path, attribute);
    }
    config.compile_fds(fds)?;
    Ok(())
}

/// `serialize_with` attributes for timestamp and enum fields of our package.
fn field_attributes(fds: &FileDescriptorSet) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == &PACKAGE[1..]) {
        for message in &file.message_type {
            for field in &message.field {
                let path = format!("{PACKAGE}.{}.{}", message.name(), field.name());
                let in_oneof = field.oneof_index.is_some() && !field.proto3_optional();
                let repeated = field.label() == Label::Repeated;
                let helper = match field.r#type() {
                    Type::Message if field.type_name() == ".google.protobuf.Timestamp" => {
                        if in_oneof {
                            "crate::json::timestamp".to_string()
                        } else {
                            "crate::json::timestamp_opt".to_string()
                        }
                    }
                    Type::Enum => {
                        let rust = rust_enum_path(field.type_name());
                        let kind = if repeated {
                            "enum_list"
                        } else if field.proto3_optional() {
                            "enum_opt"
                        } else {
                            "enum_value"
                        };
                        format!("crate::json::{kind}::<{rust}, _>")
                    }
                    _ => continue,
                };
                out.push((path, format!("#[serde(serialize_with = \"{helper}\")]")));
            }
        }
    }
    out
}

/// `.valence.lifecycle.v1.LinearState` -> `crate::v1::LinearState`.
fn rust_enum_path(type_name: &str) -> String {
    let short = type_name.rsplit('.').next().unwrap_or(type_name);
    format!("crate::v1::{short}")
}

/// `impl crate::json::ProtoEnum` for every enum of our package.
fn enum_impls(fds: &FileDescriptorSet) -> String {
    let mut out = String::new();
    for file in fds.file.iter().filter(|f| f.package() == &PACKAGE[1..]) {
        for e in &file.enum_type {
            let name = e.name();
            let prefix = upper_snake(name);
            writeln!(
                out,
                "impl crate::json::ProtoEnum for crate::v1::{name} {{\n    \
                 const PREFIX: &'static str = \"{prefix}_\";\n    \
                 fn name_of(value: i32) -> Option<&'static str> {{ Self::try_from(value).ok().map(|v| v.as_str_name()) }}\n    \
                 fn value_of(name: &str) -> Option<i32> {{ Self::from_str_name(name).map(|v| v as i32) }}\n}}"
            )
            .expect("writing to a String cannot fail");
        }
    }
    out
}

/// `LinearState` -> `LINEAR_STATE`, the prefix buf's style guide gives enum values.
fn upper_snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
