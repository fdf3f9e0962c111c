//! `rules`: RuleService. Rule files use seed 000's JSON shape (the body of
//! `POST /rules`), parsed by the API crate so every client agrees on it.

use std::io::Read;

use clap::Subcommand;
use valence_lifecycle_api::{
    rule_json::{SeedAction, SeedRule},
    v1::{self, evaluate_rule_request::Target, rule_service_client::RuleServiceClient},
};
use valence_lifecycle_client::{AuthedChannel, ClientError};

use super::{
    args::Page,
    output::{self, Fields, Table},
    Context,
};

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// Create a rule from a JSON file in seed 000's format ('-' reads stdin).
    Create {
        /// The rule file, or '-'.
        file: String,
    },
    /// List rules by id.
    List {
        /// Only enabled rules.
        #[arg(long)]
        enabled_only: bool,
        #[command(flatten)]
        page: Page,
    },
    /// Show one rule.
    Get {
        /// Rule id.
        id: String,
    },
    /// Replace a rule (matched by the id in the file) from a JSON file ('-' reads stdin).
    Update {
        /// The rule file, or '-'.
        file: String,
    },
    /// Enable a rule.
    Enable {
        /// Rule id.
        id: String,
    },
    /// Disable a rule.
    Disable {
        /// Rule id.
        id: String,
    },
    /// Delete a rule.
    Delete {
        /// Rule id.
        id: String,
    },
    /// Dry run: the sessions a rule matches now and what it would do to them.
    Evaluate {
        /// Rule id.
        id: String,
        /// Maximum matches shown (server default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

/// Runs a `rules` subcommand.
pub(crate) async fn run(ctx: &Context, command: RulesCommand) -> Result<(), ClientError> {
    match command {
        RulesCommand::Create { file } => {
            let rule = Some(read_rule(&file)?.into());
            let response = rules(ctx)
                .await?
                .create_rule(v1::CreateRuleRequest { rule })
                .await?;
            show_rule(ctx, response.into_inner().rule)
        }
        RulesCommand::Update { file } => {
            let rule = Some(read_rule(&file)?.into());
            let response = rules(ctx)
                .await?
                .update_rule(v1::UpdateRuleRequest { rule })
                .await?;
            show_rule(ctx, response.into_inner().rule)
        }
        RulesCommand::Get { id } => {
            let response = rules(ctx)
                .await?
                .get_rule(v1::GetRuleRequest { id })
                .await?;
            show_rule(ctx, response.into_inner().rule)
        }
        RulesCommand::Enable { id } => set_enabled(ctx, id, true).await,
        RulesCommand::Disable { id } => set_enabled(ctx, id, false).await,
        RulesCommand::Delete { id } => delete(ctx, id).await,
        RulesCommand::List { enabled_only, page } => list(ctx, enabled_only, page).await,
        RulesCommand::Evaluate { id, limit } => evaluate(ctx, id, limit).await,
    }
}

/// The rule stub; connects on first use, so a bad rule file is reported
/// even when the server is down.
async fn rules(ctx: &Context) -> Result<RuleServiceClient<AuthedChannel>, ClientError> {
    Ok(ctx.client().await?.rules())
}

/// Reads and parses a rule file. The error names the file and, from serde,
/// the problem and its line and column.
fn read_rule(file: &str) -> Result<SeedRule, ClientError> {
    let shown = if file == "-" { "stdin" } else { file };
    let text = read_input(file)
        .map_err(|e| ClientError::InvalidArgument(format!("cannot read {shown}: {e}")))?;
    parse_rule(&text).map_err(|e| ClientError::InvalidArgument(format!("{shown}: {e}")))
}

fn read_input(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

fn parse_rule(text: &str) -> Result<SeedRule, serde_json::Error> {
    serde_json::from_str(text)
}

async fn set_enabled(ctx: &Context, id: String, enabled: bool) -> Result<(), ClientError> {
    let request = v1::SetRuleEnabledRequest { id, enabled };
    let response = ctx
        .client()
        .await?
        .rules()
        .set_rule_enabled(request)
        .await?;
    show_rule(ctx, response.into_inner().rule)
}

async fn delete(ctx: &Context, id: String) -> Result<(), ClientError> {
    let request = v1::DeleteRuleRequest { id: id.clone() };
    let response = ctx
        .client()
        .await?
        .rules()
        .delete_rule(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
    } else {
        println!("deleted rule {id}");
    }
    Ok(())
}

/// Prints a rule returned by the server: its proto JSON with --json,
/// otherwise its fields with condition and action in seed 000's notation.
fn show_rule(ctx: &Context, rule: Option<v1::ProgressionRule>) -> Result<(), ClientError> {
    let rule = rule.unwrap_or_default();
    if ctx.json {
        output::print_json(&rule);
        return Ok(());
    }
    let seed = SeedRule::try_from(&rule).ok();
    let condition = seed.as_ref().map(|s| compact(&s.condition));
    let action = seed.as_ref().map(|s| compact(&s.action));
    Fields::default()
        .add("id", rule.id)
        .add("name", rule.name)
        .add("enabled", rule.enabled.to_string())
        .add("condition", condition.unwrap_or_else(|| "-".into()))
        .add("action", action.unwrap_or_else(|| "-".into()))
        .add("created", output::time(rule.created_at.as_ref()))
        .add("updated", output::time(rule.updated_at.as_ref()))
        .print();
    Ok(())
}

fn compact<T: serde::Serialize>(value: &T) -> String {
    output::json_line(value)
}

async fn list(ctx: &Context, enabled_only: bool, page: Page) -> Result<(), ClientError> {
    let (page_size, page_token) = page.parts();
    let request = v1::ListRulesRequest {
        page_size,
        page_token,
        enabled_only,
    };
    let response = ctx
        .client()
        .await?
        .rules()
        .list_rules(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "ENABLED", "CONDITION", "ACTION", "UPDATED"]);
    for rule in &response.rules {
        let seed = SeedRule::try_from(rule).ok();
        table.row(vec![
            rule.id.clone(),
            output::truncate(&rule.name, 40),
            rule.enabled.to_string(),
            seed.as_ref()
                .map_or_else(|| "-".into(), |s| compact(&s.condition)),
            seed.as_ref()
                .map_or_else(|| "-".into(), |s| action_summary(&s.action)),
            output::time(rule.updated_at.as_ref()),
        ]);
    }
    table.print("rules");
    output::next_page_hint(&response.next_page_token);
    Ok(())
}

/// A one-cell description of an action; the full form is in `rules get`.
fn action_summary(action: &SeedAction) -> String {
    match action {
        SeedAction::ConsumeAndCreate(templates) => {
            format!("ConsumeAndCreate({})", count(templates.len(), "template"))
        }
        SeedAction::ExecuteBundle(bundle) => {
            format!(
                "ExecuteBundle({})",
                count(bundle.operations.len(), "operation")
            )
        }
        SeedAction::NotifyWebhook(url) => format!("NotifyWebhook({url})"),
    }
}

/// `1 template`, `2 templates`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

async fn evaluate(ctx: &Context, id: String, limit: Option<u32>) -> Result<(), ClientError> {
    let request = v1::EvaluateRuleRequest {
        target: Some(Target::Id(id)),
        limit: limit.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
    };
    let response = ctx
        .client()
        .await?
        .rules()
        .evaluate_rule(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let mut table = Table::new(&["SESSION", "ACTION", "DESCRIPTION"]);
    for m in &response.matches {
        table.row(vec![
            m.session_id.clone(),
            m.action_kind.clone(),
            output::or_dash(&m.description),
        ]);
    }
    table.print("matching sessions");
    println!(
        "{} of {} live sessions match",
        response.matches.len(),
        response.sessions_evaluated
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_EXAMPLE: &str = r#"{
      "id": "rule-1",
      "name": "Auto-consume idle sessions",
      "condition": { "SessionIdleFor": 300 },
      "action": { "ConsumeAndCreate": [{ "account_indices": [0, 1], "namespace": "recycled", "metadata": [] }] },
      "enabled": true
    }"#;

    #[test]
    fn seed_example_parses() {
        let rule = parse_rule(SEED_EXAMPLE).unwrap();
        assert_eq!(rule.id, "rule-1");
        assert_eq!(action_summary(&rule.action), "ConsumeAndCreate(1 template)");
        assert_eq!(compact(&rule.condition), r#"{"SessionIdleFor":300}"#);
    }

    #[test]
    fn parse_errors_name_the_problem_and_file() {
        let dir = std::env::temp_dir().join(format!("lifecyclectl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(
            &path,
            SEED_EXAMPLE.replace("SessionIdleFor", "SessionSleepy"),
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let error = read_rule(file).unwrap_err();
        let message = error.to_string();
        assert_eq!(error.code_name(), "invalid_argument");
        assert!(
            message.starts_with(file) && message.contains("SessionSleepy"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_files_are_reported() {
        let error = read_rule("/nonexistent/rule.json").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot read /nonexistent/rule.json"));
    }
}
