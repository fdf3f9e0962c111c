//! One writer per record kind across replicas: an API call taken by a
//! follower places things on chain and writes nothing itself; the leader's
//! monitor records what it sees on chain, once.

use std::time::Duration;

use solana_sdk::pubkey::Pubkey;
use tonic::transport::Channel;
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, AccountRequestStatus, EventType,
    RequestAccountRequest,
};

use crate::{
    builder::{events_of, wait_status, Wallet},
    chain::Net,
    common::{caps, eventually, health, Db, TestDb},
    process::ServerProcess,
};

fn component_names(health: &serde_json::Value) -> Vec<String> {
    health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_taken_by_the_follower_is_recorded_once_by_the_leader_postgres() {
    let Some(db) = TestDb::new(Db::Postgres).await else {
        return;
    };
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let start = |replica: &str| {
        let vars = crate::chaos::server_env(&net, &wallet, replica);
        let url = db.url.clone();
        async move {
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ServerProcess::start(&url, &vars).await
        }
    };
    let leader = start("replica-a").await;
    eventually(Duration::from_secs(10), "replica-a leads", || async {
        health(&format!("http://{}", leader.api)).await["leader"]["is_leader"] == true
    })
    .await;
    let follower = start("replica-b").await;
    let follower_health = health(&format!("http://{}", follower.api)).await;
    assert_eq!(follower_health["leader"]["is_leader"], false);
    let names = component_names(&follower_health);
    for duty in ["monitor", "builder"] {
        assert!(
            !names.contains(&duty.to_string()),
            "the follower runs no {duty}: {names:?}"
        );
    }

    let channel = Channel::from_shared(format!("http://{}", follower.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = LifecycleServiceClient::new(channel);
    let ask = RequestAccountRequest {
        shard: Default::default(),
        owner: Pubkey::new_unique().to_string(),
        capabilities: caps(&["transfer"]),
        init_state_hash: String::new(),
        idempotency_key: "follower-order-1".into(),
    };
    let placed = client
        .request_account(ask.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !placed.signature.is_empty(),
        "the follower placed it on chain"
    );
    let answered = placed.request.unwrap();
    assert_eq!(answered.owner, ask.owner);
    let id: Pubkey = answered.id.parse().unwrap();

    // The leader's monitor sees the request on chain and its builder
    // initializes it; the follower reads the result from the shared store.
    let done = wait_status(
        &client,
        &id,
        AccountRequestStatus::Initialized,
        Duration::from_secs(30),
    )
    .await;
    let requested = events_of(&mut client, &id.to_string(), EventType::AccountRequested).await;
    assert_eq!(requested.len(), 1, "recorded once: {requested:?}");
    assert!(
        requested[0].slot.is_some(),
        "recorded from the chain (with the slot it was seen at), not by the API call"
    );
    let initialized = events_of(&mut client, &done.account_id, EventType::AccountInitialized).await;
    assert_eq!(initialized.len(), 1, "initialized once");

    // A repeat through the follower answers with the record and sends nothing.
    let again = client.request_account(ask).await.unwrap().into_inner();
    assert!(again.signature.is_empty(), "a repeat sends nothing");
    let again = again.request.unwrap();
    assert_eq!(again.id, id.to_string());
    assert_eq!(again.status, AccountRequestStatus::Initialized as i32);
    let requested = events_of(&mut client, &id.to_string(), EventType::AccountRequested).await;
    assert_eq!(requested.len(), 1, "still recorded once");

    assert_eq!(follower.terminate().await, Some(0));
    assert_eq!(leader.terminate().await, Some(0));
}
