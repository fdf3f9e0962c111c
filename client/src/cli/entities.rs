//! `accounts`, `account-requests`, `sessions` and `progression`: the read
//! side of LifecycleService.

use clap::Subcommand;
use valence_lifecycle_api::v1;
use valence_lifecycle_client::ClientError;

use super::{
    args::{enum_value, Page},
    output::{self, Fields, Table},
    Context,
};

/// `accounts` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AccountsCommand {
    /// List accounts, newest first.
    List {
        /// Only accounts of this owner (base58).
        #[arg(long)]
        owner: Option<String>,
        /// Only records of this shard program (its id or configured name).
        #[arg(long)]
        shard: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// Show one account.
    Get {
        /// Account address (base58).
        id: String,
    },
}

/// `account-requests` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AccountRequestsCommand {
    /// List account requests, newest first.
    List {
        /// Only requests with this status: pending, processing, initialized, failed.
        #[arg(long, value_parser = enum_value::<v1::AccountRequestStatus>)]
        status: Option<i32>,
        /// Only records of this shard program (its id or configured name).
        #[arg(long)]
        shard: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// Ask the server to place an account request on chain (operator role).
    Create {
        /// Base58 public key of the account's owner.
        #[arg(long)]
        owner: String,
        /// A capability (repeat for several), e.g. --capability transfer.
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// Expected initial state hash (64 hex); the server computes it when omitted.
        #[arg(long, default_value = "")]
        init_state_hash: String,
        /// Makes the command safe to repeat: the same key returns the same request.
        #[arg(long, default_value = "")]
        idempotency_key: String,
        /// The shard program to place it on (id or name); default the first configured.
        #[arg(long, default_value = "")]
        shard: String,
    },
    /// Put a failed (parked) request back in the builder's queue (operator role).
    Retry {
        /// Request id.
        id: String,
    },
}

/// `sessions` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SessionsCommand {
    /// List live sessions, newest first.
    List {
        /// Include consumed sessions.
        #[arg(long)]
        all: bool,
        /// Only sessions of this owner (base58).
        #[arg(long)]
        owner: Option<String>,
        /// Only sessions in this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only records of this shard program (its id or configured name).
        #[arg(long)]
        shard: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// Show one session.
    Get {
        /// Session address (base58).
        id: String,
    },
}

/// Runs an `accounts` subcommand.
pub(crate) async fn accounts(ctx: &Context, command: AccountsCommand) -> Result<(), ClientError> {
    match command {
        AccountsCommand::List { owner, shard, page } => {
            list_accounts(ctx, owner, shard, page).await
        }
        AccountsCommand::Get { id } => get_account(ctx, id).await,
    }
}

async fn list_accounts(
    ctx: &Context,
    owner: Option<String>,
    shard: Option<String>,
    page: Page,
) -> Result<(), ClientError> {
    let (page_size, page_token) = page.parts();
    let request = v1::ListAccountsRequest {
        page_size,
        page_token,
        owner: owner.unwrap_or_default(),
        shard: shard.unwrap_or_default(),
    };
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .list_accounts(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let mut table = Table::new(&["ID", "OWNER", "STATE", "ACTIVE", "CAPABILITIES", "CREATED"]);
    for account in &response.accounts {
        table.row(vec![
            account.id.clone(),
            account.owner.clone(),
            output::name::<v1::LinearState>(account.state),
            account.is_active.to_string(),
            output::list(&account.capabilities),
            output::time(account.created_at.as_ref()),
        ]);
    }
    table.print("accounts");
    output::next_page_hint(&response.next_page_token);
    Ok(())
}

async fn get_account(ctx: &Context, id: String) -> Result<(), ClientError> {
    let request = v1::GetAccountRequest { id };
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .get_account(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let account = response.account.unwrap_or_default();
    Fields::default()
        .add("id", account.id)
        .add("owner", account.owner)
        .add("state", output::name::<v1::LinearState>(account.state))
        .add("active", account.is_active.to_string())
        .add("capabilities", output::list(&account.capabilities))
        .add("state hash", output::or_dash(&account.state_hash))
        .add("request", output::or_dash(&account.request_id))
        .add("created", output::time(account.created_at.as_ref()))
        .print();
    Ok(())
}

/// Runs an `account-requests` subcommand.
pub(crate) async fn account_requests(
    ctx: &Context,
    command: AccountRequestsCommand,
) -> Result<(), ClientError> {
    let (status, shard, page) = match command {
        AccountRequestsCommand::List {
            status,
            shard,
            page,
        } => (status, shard, page),
        AccountRequestsCommand::Create {
            owner,
            capabilities,
            init_state_hash,
            idempotency_key,
            shard,
        } => {
            let request = v1::RequestAccountRequest {
                owner,
                capabilities,
                init_state_hash,
                idempotency_key,
                shard,
            };
            return create_account_request(ctx, request).await;
        }
        AccountRequestsCommand::Retry { id } => return retry_account_request(ctx, id).await,
    };
    let (page_size, page_token) = page.parts();
    let request = v1::ListAccountRequestsRequest {
        page_size,
        page_token,
        status: status.unwrap_or_default(),
        shard: shard.unwrap_or_default(),
    };
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .list_account_requests(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID", "OWNER", "STATUS", "ATTEMPTS", "ACCOUNT", "CREATED", "FAILURE",
    ]);
    for r in &response.requests {
        table.row(vec![
            r.id.clone(),
            r.owner.clone(),
            output::name::<v1::AccountRequestStatus>(r.status),
            r.attempts.to_string(),
            output::or_dash(&r.account_id),
            output::time(r.created_at.as_ref()),
            output::or_dash(&r.failure_reason),
        ]);
    }
    table.print("account requests");
    output::next_page_hint(&response.next_page_token);
    Ok(())
}

async fn create_account_request(
    ctx: &Context,
    request: v1::RequestAccountRequest,
) -> Result<(), ClientError> {
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .request_account(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let r = response.request.unwrap_or_default();
    if response.signature.is_empty() {
        println!(
            "request {} already placed ({})",
            r.id,
            output::name::<v1::AccountRequestStatus>(r.status)
        );
    } else {
        println!(
            "request {} placed by transaction {}",
            r.id, response.signature
        );
    }
    println!("init_state_hash {}", r.init_state_hash);
    Ok(())
}

async fn retry_account_request(ctx: &Context, id: String) -> Result<(), ClientError> {
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .retry_account_request(v1::RetryAccountRequestRequest { id })
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let r = response.request.unwrap_or_default();
    println!(
        "request {} is {} again",
        r.id,
        output::name::<v1::AccountRequestStatus>(r.status)
    );
    Ok(())
}

/// Runs a `sessions` subcommand.
pub(crate) async fn sessions(ctx: &Context, command: SessionsCommand) -> Result<(), ClientError> {
    match command {
        SessionsCommand::List {
            all,
            owner,
            namespace,
            shard,
            page,
        } => {
            let (page_size, page_token) = page.parts();
            let request = v1::ListSessionsRequest {
                page_size,
                page_token,
                include_consumed: all,
                owner: owner.unwrap_or_default(),
                namespace: namespace.unwrap_or_default(),
                shard: shard.unwrap_or_default(),
            };
            list_sessions(ctx, request).await
        }
        SessionsCommand::Get { id } => get_session(ctx, id).await,
    }
}

async fn list_sessions(ctx: &Context, request: v1::ListSessionsRequest) -> Result<(), ClientError> {
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .list_sessions(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID",
        "OWNER",
        "NAMESPACE",
        "STATE",
        "ACCOUNTS",
        "NONCE",
        "LAST ACTIVITY",
    ]);
    for s in &response.sessions {
        table.row(vec![
            s.id.clone(),
            s.owner.clone(),
            output::or_dash(&s.namespace),
            output::name::<v1::LinearState>(s.state),
            s.accounts.len().to_string(),
            s.nonce.to_string(),
            output::time(s.last_activity_at.as_ref()),
        ]);
    }
    table.print("sessions");
    output::next_page_hint(&response.next_page_token);
    Ok(())
}

async fn get_session(ctx: &Context, id: String) -> Result<(), ClientError> {
    let request = v1::GetSessionRequest { id };
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .get_session(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let s = response.session.unwrap_or_default();
    Fields::default()
        .add("id", s.id)
        .add("owner", s.owner)
        .add("namespace", output::or_dash(&s.namespace))
        .add("state", output::name::<v1::LinearState>(s.state))
        .add("consumed", s.is_consumed.to_string())
        .add("nonce", s.nonce.to_string())
        .add("accounts", output::list(&s.accounts))
        .add("created sessions", output::list(&s.created_sessions))
        .add("metadata", output::hex(&s.metadata))
        .add("created", output::time(s.created_at.as_ref()))
        .add("last activity", output::time(s.last_activity_at.as_ref()))
        .add("consumed at", output::time(s.consumed_at.as_ref()))
        .print();
    Ok(())
}

/// Prints an entity's current state, then its transitions oldest first.
pub(crate) async fn progression(ctx: &Context, entity_id: String) -> Result<(), ClientError> {
    let request = v1::GetProgressionRequest { entity_id };
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .get_progression(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let p = response.progression.unwrap_or_default();
    Fields::default()
        .add("entity", p.entity_id)
        .add("kind", output::name::<v1::EntityKind>(p.kind))
        .add("state", output::name::<v1::LinearState>(p.current_state))
        .print();
    println!();
    let mut table = Table::new(&["AT", "FROM", "TO", "SLOT", "SIGNATURE", "REASON"]);
    for t in &p.history {
        table.row(vec![
            output::time(t.at.as_ref()),
            output::name_or_dash::<v1::LinearState>(t.from_state),
            output::name::<v1::LinearState>(t.to_state),
            t.slot
                .map_or_else(|| "-".to_string(), |slot| slot.to_string()),
            output::or_dash(&t.signature),
            output::or_dash(&t.reason),
        ]);
    }
    table.print("transitions");
    Ok(())
}
