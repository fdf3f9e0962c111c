//! `singletons`: SingletonAdminService (admin role). Initialization configs
//! come from flags, a JSON file, or both (flags win).

use clap::{ArgGroup, Args, Subcommand};
use serde::{Deserialize, Deserializer};
use valence_lifecycle_api::v1::{
    self, singleton_admin_service_client::SingletonAdminServiceClient, singleton_info,
    update_singleton_config_request::Update, SingletonKind,
};
use valence_lifecycle_client::{AuthedChannel, ClientError};

use super::{
    args::enum_value,
    output::{self, Table},
    usage_error, Context,
};

/// `singletons` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SingletonsCommand {
    /// Status, config version and health of processor, scheduler and diff.
    Status,
    /// Initialize singletons (processor, then scheduler, then diff).
    Init(InitArgs),
    /// Pause one singleton, or all (processor first).
    Pause(Target),
    /// Resume one singleton, or all (diff first).
    Resume(Target),
    /// Change some config fields of one singleton.
    Update(UpdateArgs),
}

/// One singleton by name, or all of them.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["name", "all"])))]
pub(crate) struct Target {
    /// processor, scheduler or diff.
    #[arg(value_parser = enum_value::<SingletonKind>)]
    name: Option<i32>,
    /// All three singletons.
    #[arg(long)]
    all: bool,
}

/// Flags of `singletons init`. A singleton is initialized when its section
/// is in the file or any of its flags is given.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// JSON file: {"processor": {...}, "scheduler": {...}, "diff": {...}}
    /// with the field names of the flags below (without the prefix).
    #[arg(long, value_name = "FILE")]
    file: Option<String>,
    #[command(flatten)]
    processor: ProcessorFields,
    #[command(flatten)]
    scheduler: SchedulerFields,
    #[command(flatten)]
    diff: DiffFields,
}

/// Processor config, as `init` flags and as the file's `processor` section.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessorFields {
    /// Processor: maximum verification functions per execution.
    #[arg(long = "processor-max-verification-functions", value_name = "N")]
    max_verification_functions: Option<u32>,
    /// Processor: compute unit budget.
    #[arg(long = "processor-max-compute-units", value_name = "N")]
    max_compute_units: Option<u64>,
    /// Processor: base58 key allowed to pause it.
    #[arg(long = "processor-pause-authority", value_name = "PUBKEY")]
    pause_authority: Option<String>,
}

/// Scheduler config, as `init` flags and as the file's `scheduler` section.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerFields {
    /// Scheduler: maximum shards scheduled.
    #[arg(long = "scheduler-max-shards", value_name = "N")]
    max_shards: Option<u32>,
    /// Scheduler: maximum queue length.
    #[arg(long = "scheduler-max-queue-size", value_name = "N")]
    max_queue_size: Option<u32>,
    /// Scheduler: default priority (0-10).
    #[arg(long = "scheduler-default-priority", value_name = "N")]
    default_priority: Option<u32>,
}

/// Diff config, as `init` flags and as the file's `diff` section.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffFields {
    /// Diff: maximum diffs per batch.
    #[arg(long = "diff-max-batch-size", value_name = "N")]
    max_batch_size: Option<u32>,
    /// Diff: optimization level (none, basic, aggressive).
    #[arg(
        long = "diff-optimization-level",
        value_name = "LEVEL",
        value_parser = enum_value::<v1::OptimizationLevel>
    )]
    #[serde(default, deserialize_with = "optimization_level")]
    optimization_level: Option<i32>,
}

/// The file's optimization level, by name like the flag ("aggressive").
fn optimization_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let Some(name) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    enum_value::<v1::OptimizationLevel>(&name)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The file of `singletons init --file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitFile {
    processor: Option<ProcessorFields>,
    scheduler: Option<SchedulerFields>,
    diff: Option<DiffFields>,
}

impl ProcessorFields {
    fn is_empty(&self) -> bool {
        self.max_verification_functions.is_none()
            && self.max_compute_units.is_none()
            && self.pause_authority.is_none()
    }

    /// These values, falling back to `base` field by field.
    fn or(self, base: Self) -> Self {
        Self {
            max_verification_functions: self
                .max_verification_functions
                .or(base.max_verification_functions),
            max_compute_units: self.max_compute_units.or(base.max_compute_units),
            pause_authority: self.pause_authority.or(base.pause_authority),
        }
    }

    // Missing fields go out as zero/empty: the server validates configs and
    // names the field, so the CLI does not duplicate its rules.
    fn config(self) -> v1::ProcessorConfig {
        v1::ProcessorConfig {
            max_verification_functions: self.max_verification_functions.unwrap_or_default(),
            max_compute_units: self.max_compute_units.unwrap_or_default(),
            pause_authority: self.pause_authority.unwrap_or_default(),
        }
    }
}

impl SchedulerFields {
    fn is_empty(&self) -> bool {
        self.max_shards.is_none()
            && self.max_queue_size.is_none()
            && self.default_priority.is_none()
    }

    fn or(self, base: Self) -> Self {
        Self {
            max_shards: self.max_shards.or(base.max_shards),
            max_queue_size: self.max_queue_size.or(base.max_queue_size),
            default_priority: self.default_priority.or(base.default_priority),
        }
    }

    fn config(self) -> v1::SchedulerConfig {
        v1::SchedulerConfig {
            max_shards: self.max_shards.unwrap_or_default(),
            max_queue_size: self.max_queue_size.unwrap_or_default(),
            default_priority: self.default_priority.unwrap_or_default(),
        }
    }
}

impl DiffFields {
    fn is_empty(&self) -> bool {
        self.max_batch_size.is_none() && self.optimization_level.is_none()
    }

    fn or(self, base: Self) -> Self {
        Self {
            max_batch_size: self.max_batch_size.or(base.max_batch_size),
            optimization_level: self.optimization_level.or(base.optimization_level),
        }
    }

    fn config(self) -> v1::DiffConfig {
        v1::DiffConfig {
            max_batch_size: self.max_batch_size.unwrap_or_default(),
            optimization_level: self.optimization_level.unwrap_or_default(),
        }
    }
}

/// Merges a file section with its flags; `None` when neither says anything.
fn merged<T: Default>(
    flags: T,
    file: Option<T>,
    is_empty: fn(&T) -> bool,
    or: fn(T, T) -> T,
) -> Option<T> {
    let in_file = file.is_some();
    let fields = or(flags, file.unwrap_or_default());
    (in_file || !is_empty(&fields)).then_some(fields)
}

impl InitArgs {
    /// The request: the file's sections overridden by flags.
    fn request(self) -> Result<v1::InitializeSingletonsRequest, ClientError> {
        let file = match &self.file {
            Some(path) => read_init_file(path)?,
            None => InitFile::default(),
        };
        let processor = merged(
            self.processor,
            file.processor,
            ProcessorFields::is_empty,
            ProcessorFields::or,
        );
        let scheduler = merged(
            self.scheduler,
            file.scheduler,
            SchedulerFields::is_empty,
            SchedulerFields::or,
        );
        let diff = merged(self.diff, file.diff, DiffFields::is_empty, DiffFields::or);
        if processor.is_none() && scheduler.is_none() && diff.is_none() {
            usage_error("nothing to initialize: give --file or --processor-*, --scheduler-*, --diff-* flags");
        }
        Ok(v1::InitializeSingletonsRequest {
            processor: processor.map(ProcessorFields::config),
            scheduler: scheduler.map(SchedulerFields::config),
            diff: diff.map(DiffFields::config),
        })
    }
}

fn read_init_file(path: &str) -> Result<InitFile, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::InvalidArgument(format!("cannot read {path}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| ClientError::InvalidArgument(format!("{path}: {e}")))
}

/// Flags of `singletons update`: the singleton, then the fields to change.
#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// processor, scheduler or diff.
    #[arg(value_parser = enum_value::<SingletonKind>)]
    name: i32,
    /// Processor: maximum verification functions per execution.
    #[arg(long, value_name = "N")]
    max_verification_functions: Option<u32>,
    /// Processor: compute unit budget.
    #[arg(long, value_name = "N")]
    max_compute_units: Option<u64>,
    /// Processor: base58 key allowed to pause it.
    #[arg(long, value_name = "PUBKEY")]
    pause_authority: Option<String>,
    /// Scheduler: maximum shards scheduled.
    #[arg(long, value_name = "N")]
    max_shards: Option<u32>,
    /// Scheduler: maximum queue length.
    #[arg(long, value_name = "N")]
    max_queue_size: Option<u32>,
    /// Scheduler: default priority (0-10).
    #[arg(long, value_name = "N")]
    default_priority: Option<u32>,
    /// Diff: maximum diffs per batch.
    #[arg(long, value_name = "N")]
    max_batch_size: Option<u32>,
    /// Diff: optimization level (none, basic, aggressive).
    #[arg(long, value_name = "LEVEL", value_parser = enum_value::<v1::OptimizationLevel>)]
    optimization_level: Option<i32>,
}

impl UpdateArgs {
    /// The update for the named singleton; a usage error when a flag of
    /// another singleton is given or none at all.
    fn update(self) -> Update {
        let (processor, scheduler, diff) = self.fields_given();
        let kind = SingletonKind::try_from(self.name).unwrap_or(SingletonKind::Unspecified);
        let (own, others) = match kind {
            SingletonKind::Processor => (processor, scheduler || diff),
            SingletonKind::Scheduler => (scheduler, processor || diff),
            _ => (diff, processor || scheduler),
        };
        let name = output::name::<SingletonKind>(self.name);
        if others {
            usage_error(format!(
                "only {name} fields can be given when updating {name}"
            ));
        }
        if !own {
            usage_error(format!("nothing to update: give at least one {name} field"));
        }
        match kind {
            SingletonKind::Processor => Update::Processor(v1::ProcessorConfigUpdate {
                max_verification_functions: self.max_verification_functions,
                max_compute_units: self.max_compute_units,
                pause_authority: self.pause_authority,
            }),
            SingletonKind::Scheduler => Update::Scheduler(v1::SchedulerConfigUpdate {
                max_shards: self.max_shards,
                max_queue_size: self.max_queue_size,
                default_priority: self.default_priority,
            }),
            _ => Update::Diff(v1::DiffConfigUpdate {
                max_batch_size: self.max_batch_size,
                optimization_level: self.optimization_level,
            }),
        }
    }

    /// Whether any processor, scheduler and diff field is given.
    fn fields_given(&self) -> (bool, bool, bool) {
        (
            self.max_verification_functions.is_some()
                || self.max_compute_units.is_some()
                || self.pause_authority.is_some(),
            self.max_shards.is_some()
                || self.max_queue_size.is_some()
                || self.default_priority.is_some(),
            self.max_batch_size.is_some() || self.optimization_level.is_some(),
        )
    }
}

/// Runs a `singletons` subcommand.
pub(crate) async fn run(ctx: &Context, command: SingletonsCommand) -> Result<(), ClientError> {
    match command {
        SingletonsCommand::Status => {
            let response = admin(ctx)
                .await?
                .get_singletons(v1::GetSingletonsRequest {})
                .await?
                .into_inner();
            show(ctx, &response, &response.singletons, "")
        }
        SingletonsCommand::Init(args) => {
            let request = args.request()?;
            let response = admin(ctx)
                .await?
                .initialize_singletons(request)
                .await?
                .into_inner();
            show(ctx, &response, &response.singletons, "")
        }
        SingletonsCommand::Pause(target) => {
            let request = v1::PauseSingletonRequest {
                singleton: target.name.unwrap_or_default(),
                all: target.all,
            };
            let response = admin(ctx)
                .await?
                .pause_singleton(request)
                .await?
                .into_inner();
            show(ctx, &response, &response.singletons, &response.message)
        }
        SingletonsCommand::Resume(target) => {
            let request = v1::ResumeSingletonRequest {
                singleton: target.name.unwrap_or_default(),
                all: target.all,
            };
            let response = admin(ctx)
                .await?
                .resume_singleton(request)
                .await?
                .into_inner();
            show(ctx, &response, &response.singletons, &response.message)
        }
        SingletonsCommand::Update(args) => {
            let request = v1::UpdateSingletonConfigRequest {
                update: Some(args.update()),
            };
            let response = admin(ctx)
                .await?
                .update_singleton_config(request)
                .await?
                .into_inner();
            let singletons: Vec<_> = response.singleton.iter().cloned().collect();
            show(ctx, &response, &singletons, "")
        }
    }
}

/// The admin stub; connects on first use, so flag and file errors are
/// reported even when the server is down.
async fn admin(ctx: &Context) -> Result<SingletonAdminServiceClient<AuthedChannel>, ClientError> {
    Ok(ctx.client().await?.singletons())
}

/// Prints a response: as JSON, or as a table of its singletons followed by
/// the server's message.
fn show<T: serde::Serialize>(
    ctx: &Context,
    response: &T,
    singletons: &[v1::SingletonInfo],
    message: &str,
) -> Result<(), ClientError> {
    if ctx.json {
        output::print_json(response);
        return Ok(());
    }
    let mut table = Table::new(&[
        "SINGLETON",
        "STATUS",
        "VERSION",
        "PROGRAM",
        "UPDATED",
        "SUCCESS",
        "CONFIG",
    ]);
    for info in singletons {
        table.row(row(info));
    }
    table.print("singletons");
    if !message.is_empty() {
        println!("{message}");
    }
    Ok(())
}

fn row(info: &v1::SingletonInfo) -> Vec<String> {
    let success = info
        .health
        .as_ref()
        .map_or_else(|| "-".into(), |h| format!("{:.0}%", h.success_rate * 100.0));
    vec![
        output::name::<SingletonKind>(info.kind),
        output::name::<v1::SingletonStatus>(info.status),
        info.version.to_string(),
        output::or_dash(&info.program_id),
        output::time(info.updated_at.as_ref()),
        success,
        config_text(info.config.as_ref()),
    ]
}

/// The config's fields as compact JSON, without the oneof wrapper.
fn config_text(config: Option<&singleton_info::Config>) -> String {
    match config {
        Some(singleton_info::Config::Processor(c)) => output::json_line(c),
        Some(singleton_info::Config::Scheduler(c)) => output::json_line(c),
        Some(singleton_info::Config::Diff(c)) => output::json_line(c),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn init_file_sections_merge_with_flags() {
        let file: InitFile = serde_json::from_str(
            r#"{"processor": {"max_verification_functions": 10, "max_compute_units": 1000000},
                "diff": {"max_batch_size": 50, "optimization_level": "Aggressive"}}"#,
        )
        .unwrap();
        let flags = ProcessorFields {
            max_compute_units: Some(2_000_000),
            ..Default::default()
        };
        let processor = merged(
            flags,
            file.processor,
            ProcessorFields::is_empty,
            ProcessorFields::or,
        )
        .unwrap()
        .config();
        assert_eq!(processor.max_verification_functions, 10);
        assert_eq!(processor.max_compute_units, 2_000_000);
        let diff = file.diff.unwrap().config();
        assert_eq!(
            diff.optimization_level,
            v1::OptimizationLevel::Aggressive as i32
        );
        let scheduler = merged(
            SchedulerFields::default(),
            file.scheduler,
            SchedulerFields::is_empty,
            SchedulerFields::or,
        );
        assert!(scheduler.is_none());
    }

    #[test]
    fn unknown_fields_in_the_init_file_are_named() {
        let error = serde_json::from_str::<InitFile>(r#"{"processor": {"max_units": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_units"), "{error}");
    }

    #[test]
    fn update_builds_a_partial_config() {
        let cli = Cli::try_parse_from([
            "lifecyclectl",
            "singletons",
            "update",
            "processor",
            "--max-compute-units",
            "2000000",
        ])
        .unwrap();
        let super::super::Command::Singletons(SingletonsCommand::Update(args)) = cli.command else {
            panic!("parsed the wrong command");
        };
        let Update::Processor(update) = args.update() else {
            panic!("not a processor update");
        };
        assert_eq!(update.max_compute_units, Some(2_000_000));
        assert_eq!(update.max_verification_functions, None);
    }

    #[test]
    fn pause_needs_a_name_or_all() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|_| ());
        assert!(parse(&["lifecyclectl", "singletons", "pause"]).is_err());
        assert!(parse(&["lifecyclectl", "singletons", "pause", "--all"]).is_ok());
        assert!(parse(&["lifecyclectl", "singletons", "pause", "diff"]).is_ok());
        assert!(parse(&["lifecyclectl", "singletons", "pause", "diff", "--all"]).is_err());
        assert!(parse(&["lifecyclectl", "singletons", "pause", "bogus"]).is_err());
    }
}
