//! Several shard programs shared by replicas through fenced leases
//! (issue 19): three replicas, each its own process, on one PostgreSQL
//! against one Surfnet with the stand-in deployed six times. Every shard is
//! owned by exactly one replica, two each; a SIGKILLed replica's shards move
//! to the survivors within the lease TTL and one renewal; a replica frozen
//! with SIGSTOP past its lease loses its shards to a higher epoch, writes
//! nothing when resumed, and rejoins; a fourth replica takes its share. In
//! every step the request records placed on the shards are recorded exactly
//! once, with their shard.
//!
//! Two tests rather than four: each replica costs seconds to start.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use solana_sdk::pubkey::Pubkey;
use tonic::transport::Channel;
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, EventType, GetStatsRequest,
    ListEventsRequest, ShardStatus,
};
use valence_lifecycle_server::chain::dev;

use crate::{
    builder::{events_of, expected_hash, Wallet},
    chain::Net,
    chaos::server_env,
    common::{caps, eventually, health, Db, TestDb},
    process::ServerProcess,
};

/// Shard programs of the deployment.
const SHARDS: usize = 6;
/// LEASE_TTL_MS of the replicas: short, so a takeover fits in a test.
const LEASE_TTL_MS: u64 = 3_000;
/// LEASE_RENEW_INTERVAL_MS of the replicas.
const RENEW_MS: u64 = 500;
/// Slack over "lease TTL + one renewal" for a loaded 2-core CI machine
/// (three or four servers, Surfnet and the test sharing it).
const MARGIN_MS: u64 = 3_000;
/// The bound on a takeover: a lost owner's leases expire within the TTL of
/// its last renewal, and a survivor takes them at its next renewal.
const TAKEOVER_WITHIN: Duration = Duration::from_millis(LEASE_TTL_MS + RENEW_MS + MARGIN_MS);
/// The bound on balancing after replicas start, join or resume: a few
/// renewals, but replica processes start one after another.
const BALANCE_WITHIN: Duration = Duration::from_secs(30);
/// The bound on every placed record being recorded (the new owner of a
/// moved shard finds what was placed meanwhile at its first pass).
const RECORD_WITHIN: Duration = Duration::from_secs(60);
/// The bound on one call to a replica: a frozen or dying one must not
/// stall a wait past its deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Owner (replica id, empty when none) and epoch of each shard, by program id.
type Ownership = BTreeMap<String, (String, u64)>;

/// The metric that says whether a replica holds a shard's lease.
const OWNED: &str = "valence_shard_owned";
/// The counter of a shard's writes the store refused by epoch.
const FENCED: &str = "valence_fenced_writes_total";

/// Environment of a replica: chaos's, plus every shard program and the
/// short lease timings.
fn shard_env(net: &Net, wallet: &Wallet, replica: &str) -> Vec<(String, String)> {
    let programs: Vec<String> = net.programs.iter().map(ToString::to_string).collect();
    let mut env = server_env(net, wallet, replica);
    env.extend([
        ("SHARD_PROGRAM_IDS".to_string(), programs.join(",")),
        ("LEASE_TTL_MS".to_string(), LEASE_TTL_MS.to_string()),
        ("LEASE_RENEW_INTERVAL_MS".to_string(), RENEW_MS.to_string()),
    ]);
    env
}

/// Shards per replica by the balancing rule: replica ids in sort order,
/// `shards / n` each and one more for the first `shards % n`.
fn fair_shares(ids: &[&str], shards: usize) -> BTreeMap<String, usize> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let (each, extra) = (shards / sorted.len(), shards % sorted.len());
    sorted
        .iter()
        .enumerate()
        .map(|(rank, id)| (id.to_string(), each + usize::from(rank < extra)))
        .collect()
}

/// `[(replica, shards)]` as a map, for comparing with [`counts`].
fn shares(of: &[(&str, usize)]) -> BTreeMap<String, usize> {
    of.iter().map(|(id, n)| (id.to_string(), *n)).collect()
}

fn ownership(shards: &[ShardStatus]) -> Ownership {
    shards
        .iter()
        .map(|s| (s.shard.clone(), (s.owner_replica_id.clone(), s.epoch)))
        .collect()
}

/// Shards per owner ("" for shards nobody holds).
fn counts(ownership: &Ownership) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (owner, _) in ownership.values() {
        *counts.entry(owner.clone()).or_default() += 1;
    }
    counts
}

fn owned_by(ownership: &Ownership, replica: &str) -> Vec<String> {
    ownership
        .iter()
        .filter(|(_, (owner, _))| owner == replica)
        .map(|(shard, _)| shard.clone())
        .collect()
}

/// A shard that changed owner between `before` and `after` did so under a
/// higher epoch: what fences its previous owner's writes.
fn assert_moves_raised_epochs(before: &Ownership, after: &Ownership) {
    for (shard, (owner, epoch)) in after {
        let (old_owner, old_epoch) = &before[shard];
        if owner != old_owner {
            assert!(
                epoch > old_epoch,
                "shard {shard} moved from {old_owner:?} to {owner:?} but its epoch went {old_epoch} → {epoch}"
            );
        }
    }
}

/// The sum of the samples of `name` labelled `shard="<shard>"` in a
/// /metrics text.
fn shard_sample(text: &str, name: &str, shard: &str) -> f64 {
    let label = format!("shard=\"{shard}\"");
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(&label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends signal `sig` to process `pid`; false when it could not be sent.
fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) only sends a signal; it touches no memory of ours.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// A replica stopped with SIGSTOP; dropping it sends SIGCONT, so a failing
/// test never leaves a frozen process behind (the process itself is
/// SIGKILLed when its ServerProcess drops).
struct Stopped {
    pid: i32,
}

impl Stopped {
    fn stop(process: &ServerProcess) -> Stopped {
        let pid = process.child.id().expect("the replica is running") as i32;
        assert!(signal(pid, libc::SIGSTOP), "SIGSTOP to {pid}");
        Stopped { pid }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // No assertion here: this may run while a failed test unwinds.
        signal(self.pid, libc::SIGCONT);
    }
}

/// One replica process and its id.
struct Replica {
    /// Set while the replica is frozen; declared first so a frozen
    /// replica is resumed before its process is killed.
    stopped: Option<Stopped>,
    id: String,
    process: ServerProcess,
}

impl Replica {
    fn http(&self) -> String {
        format!("http://{}", self.process.api)
    }

    async fn client(&self) -> Option<LifecycleServiceClient<Channel>> {
        let channel = Channel::from_shared(format!("http://{}", self.process.grpc))
            .unwrap()
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .ok()?;
        Some(LifecycleServiceClient::new(channel))
    }

    /// Every shard as this replica reports it (GetStats); None when it
    /// does not answer.
    async fn shards(&self) -> Option<Vec<ShardStatus>> {
        let mut client = self.client().await?;
        let stats = client.get_stats(GetStatsRequest {}).await.ok()?;
        Some(stats.into_inner().shards)
    }

    async fn metrics(&self) -> Option<String> {
        let answer = reqwest::Client::new()
            .get(format!("{}/metrics", self.http()))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .ok()?;
        answer.text().await.ok()
    }

    /// Whether this replica's own view agrees with `ownership`: it says
    /// owned_here (GetStats) and `valence_shard_owned` 1 (/metrics) for
    /// exactly the shards `ownership` gives it.
    async fn agrees(&self, ownership: &Ownership) -> bool {
        let (Some(shards), Some(metrics)) = (self.shards().await, self.metrics().await) else {
            return false;
        };
        shards.len() == ownership.len()
            && shards.iter().all(|s| {
                let mine = ownership
                    .get(&s.shard)
                    .is_some_and(|(owner, _)| *owner == self.id);
                s.owned_here == mine && (shard_sample(&metrics, OWNED, &s.shard) == 1.0) == mine
            })
    }

    /// Whether /health lists the monitor and the builder of every shard in
    /// `shards` (named `monitor:<name>`, `builder:<name>`; the name is the
    /// program id, none being configured).
    async fn runs(&self, shards: &[String]) -> bool {
        let body = health(&self.http()).await;
        let names: BTreeSet<&str> = body["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        shards.iter().all(|shard| {
            ["monitor", "builder"]
                .iter()
                .all(|duty| names.contains(format!("{duty}:{shard}").as_str()))
        })
    }

    /// This replica's fenced writes, over every shard.
    async fn fenced_writes(&self) -> f64 {
        let metrics = self.metrics().await.unwrap_or_default();
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{FENCED}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A request record placed on a shard program, as a third party would.
#[derive(Debug, Clone)]
struct Placed {
    id: Pubkey,
    shard: Pubkey,
}

/// Replicas (processes) on one fresh PostgreSQL database against one
/// Surfnet with [`SHARDS`] shard programs, paying with one wallet.
struct Cluster {
    /// First, so a failing test kills the processes before the chain goes.
    replicas: Vec<Replica>,
    net: Net,
    wallet: Wallet,
    db: TestDb,
    /// The last ownership logged, so the log shows each change once.
    seen: Mutex<String>,
}

impl Cluster {
    /// Starts replicas `ids`, one after another; None without PostgreSQL.
    async fn start(ids: &[&str]) -> Option<Cluster> {
        let db = TestDb::new(Db::Postgres).await?;
        let net = Net::start_with_programs(SHARDS).await;
        let wallet = Wallet::funded(&net);
        let mut cluster = Cluster {
            replicas: Vec::new(),
            net,
            wallet,
            db,
            seen: Mutex::default(),
        };
        for id in ids {
            cluster.join(id).await;
        }
        Some(cluster)
    }

    /// Starts replica `id` (waits until its /health answers).
    async fn join(&mut self, id: &str) {
        let env = shard_env(&self.net, &self.wallet, id);
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let process = ServerProcess::start(&self.db.url, &vars).await;
        self.replicas.push(Replica {
            stopped: None,
            id: id.to_string(),
            process,
        });
    }

    fn replica(&mut self, id: &str) -> &mut Replica {
        self.replicas
            .iter_mut()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    /// The replicas not frozen: the ones that can answer.
    fn live(&self) -> Vec<&Replica> {
        self.replicas
            .iter()
            .filter(|r| r.stopped.is_none())
            .collect()
    }

    /// SIGKILLs replica `id` and waits until it is gone.
    async fn kill(&mut self, id: &str) {
        let at = self.replicas.iter().position(|r| r.id == id).unwrap();
        let mut replica = self.replicas.remove(at);
        replica.process.child.start_kill().unwrap();
        replica.process.child.wait().await.unwrap();
    }

    /// SIGSTOPs replica `id`: it keeps its connections but does nothing.
    fn freeze(&mut self, id: &str) {
        let replica = self.replica(id);
        replica.stopped = Some(Stopped::stop(&replica.process));
    }

    /// SIGCONTs replica `id`.
    fn thaw(&mut self, id: &str) {
        self.replica(id).stopped = None;
    }

    /// One request record placed on `program`, valid for the builder.
    fn place(&self, program: &Pubkey) -> Placed {
        let capabilities = caps(&["transfer"]);
        let id = dev::random_key();
        let record = dev::account_request(
            id,
            Pubkey::new_unique(),
            capabilities.clone(),
            expected_hash(&capabilities),
        );
        self.net.place_on(program, &id, &record.encode());
        Placed {
            id,
            shard: *program,
        }
    }

    /// One request record on every shard.
    fn place_round(&self) -> Vec<Placed> {
        self.net.programs.iter().map(|p| self.place(p)).collect()
    }

    /// The ownership when every shard has an owner, each live replica holds
    /// its fair share, and every live replica agrees on who holds what;
    /// None otherwise. (A frozen replica is not asked.)
    async fn balanced(&self) -> Option<Ownership> {
        let live = self.live();
        let ownership = ownership(&live.first()?.shards().await?);
        self.log(&ownership);
        let programs: BTreeSet<String> =
            self.net.programs.iter().map(ToString::to_string).collect();
        let ids: Vec<&str> = live.iter().map(|r| r.id.as_str()).collect();
        if ownership.keys().cloned().collect::<BTreeSet<_>>() != programs
            || counts(&ownership) != fair_shares(&ids, SHARDS)
        {
            return None;
        }
        for replica in &live {
            if !replica.agrees(&ownership).await {
                return None;
            }
        }
        Some(ownership)
    }

    /// Prints the shards per owner when they changed since the last call
    /// (the test's output then shows how a wait that failed got stuck).
    fn log(&self, ownership: &Ownership) {
        let now = format!("{:?}", counts(ownership));
        let mut seen = self.seen.lock().unwrap();
        if *seen != now {
            eprintln!("shards per owner: {now}");
            *seen = now;
        }
    }

    async fn balanced_into(&self, found: &Mutex<Option<Ownership>>) -> bool {
        let Some(ownership) = self.balanced().await else {
            return false;
        };
        *found.lock().unwrap() = Some(ownership);
        true
    }

    /// Waits (up to `within`) until the shards are balanced over the live
    /// replicas, calling `each_poll` before every look; returns the
    /// ownership and the time taken.
    async fn wait_balanced_while(
        &self,
        within: Duration,
        what: &str,
        mut each_poll: impl FnMut(),
    ) -> (Ownership, Duration) {
        let found = Mutex::new(None);
        let found_ref = &found;
        let took = eventually(within, what, move || {
            each_poll();
            self.balanced_into(found_ref)
        })
        .await;
        let ownership = found.into_inner().unwrap().expect("found when balanced");
        (ownership, took)
    }

    async fn wait_balanced(&self, within: Duration, what: &str) -> (Ownership, Duration) {
        self.wait_balanced_while(within, what, || {}).await
    }

    /// Waits until every record of `placed` has its AccountRequested event.
    async fn wait_recorded(&self, placed: &[Placed]) {
        let client = self.live()[0]
            .client()
            .await
            .expect("a live replica answers");
        let deadline = Instant::now() + RECORD_WITHIN;
        for p in placed {
            let id = p.id.to_string();
            let what = format!("request {id} on shard {} recorded", p.shard);
            let within = deadline.saturating_duration_since(Instant::now());
            eventually(within, &what, || {
                let (mut client, id) = (client.clone(), id.clone());
                async move {
                    !events_of(&mut client, &id, EventType::AccountRequested)
                        .await
                        .is_empty()
                }
            })
            .await;
        }
    }

    /// Waits until every record of `placed` is recorded, then checks each
    /// was recorded exactly once, with its shard, and that each shard has
    /// no AccountRequested event beyond one per record placed on it
    /// (`placed` must hold every record the test placed).
    async fn assert_recorded_once(&self, placed: &[Placed]) {
        self.wait_recorded(placed).await;
        let mut client = self.live()[0]
            .client()
            .await
            .expect("a live replica answers");
        let mut wrong = Vec::new();
        for p in placed {
            let events =
                events_of(&mut client, &p.id.to_string(), EventType::AccountRequested).await;
            let shards: Vec<String> = events.into_iter().map(|e| e.shard).collect();
            if shards != vec![p.shard.to_string()] {
                wrong.push(format!(
                    "{} placed on {}: recorded on {shards:?}",
                    p.id, p.shard
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} records not recorded exactly once on their shard: {wrong:#?}",
            wrong.len(),
            placed.len()
        );
        for program in &self.net.programs {
            let expected = placed.iter().filter(|p| p.shard == *program).count();
            let recorded = requested_on(&mut client, &program.to_string()).await;
            assert_eq!(
                recorded, expected,
                "AccountRequested events of shard {program} (ListEvents shard filter)"
            );
        }
    }

    /// SIGTERMs every replica; each must exit cleanly.
    async fn stop(self) {
        for replica in self.replicas {
            assert!(replica.stopped.is_none(), "{} is still frozen", replica.id);
            let id = replica.id;
            assert_eq!(replica.process.terminate().await, Some(0), "{id} exit code");
        }
    }
}

/// AccountRequested events listed with the `shard` filter; each must
/// carry that shard.
async fn requested_on(client: &mut LifecycleServiceClient<Channel>, shard: &str) -> usize {
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = client
            .list_events(ListEventsRequest {
                limit: 1000,
                event_type: EventType::AccountRequested as i32,
                after_sequence: Some(after),
                shard: shard.to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let Some(last) = page.last() else {
            return count;
        };
        assert!(
            page.iter().all(|e| e.shard == shard),
            "ListEvents(shard = {shard}) answered events of other shards"
        );
        after = last.sequence;
        count += page.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_shards_split_two_each_and_a_killed_replicas_move_within_the_lease_postgres() {
    let Some(mut cluster) = Cluster::start(&["replica-a", "replica-b", "replica-c"]).await else {
        return;
    };
    // Every shard owned by exactly one replica, two each, and run there.
    let (before, _) = cluster
        .wait_balanced(BALANCE_WITHIN, "six shards split over three replicas")
        .await;
    assert_eq!(
        counts(&before),
        shares(&[("replica-a", 2), ("replica-b", 2), ("replica-c", 2)])
    );
    for replica in cluster.live() {
        let mine = owned_by(&before, &replica.id);
        eventually(
            BALANCE_WITHIN,
            &format!("{} runs the monitor and builder of {mine:?}", replica.id),
            || replica.runs(&mine),
        )
        .await;
    }
    let mut placed = cluster.place_round();
    placed.extend(cluster.place_round());
    cluster.assert_recorded_once(&placed).await;

    // SIGKILL: the victim's leases expire and the survivors take them,
    // while records keep arriving on its shards.
    let victim = "replica-b";
    let orphaned = owned_by(&before, victim);
    cluster.kill(victim).await;
    let killed = Instant::now();
    placed.extend(cluster.place_round());
    let takeover = Takeover {
        victim,
        signal: "SIGKILL",
        since: killed,
        before: &before,
        survivors: &[("replica-a", 3), ("replica-c", 3)],
    };
    takeover.assert_within(&cluster, &orphaned).await;
    placed.extend(cluster.place_round());
    cluster.assert_recorded_once(&placed).await;
    cluster.stop().await;
}

/// A replica lost to `signal` at `since`, whose shards the survivors must
/// take within TAKEOVER_WITHIN, ending with `survivors`' shares.
struct Takeover<'a> {
    victim: &'a str,
    signal: &'a str,
    since: Instant,
    before: &'a Ownership,
    survivors: &'a [(&'a str, usize)],
}

impl Takeover<'_> {
    /// Waits for the takeover and checks its time, the shares and that
    /// every one of `lost` (and every moved shard) has a higher epoch.
    async fn assert_within(&self, cluster: &Cluster, lost: &[String]) -> Ownership {
        let victim = self.victim;
        let what = format!("the others take {victim}'s shards");
        let (after, _) = cluster.wait_balanced(TAKEOVER_WITHIN, &what).await;
        let took = self.since.elapsed();
        println!(
            "shards: {victim}'s shards taken over {:.2} s after {} (bound {TAKEOVER_WITHIN:?})",
            took.as_secs_f64(),
            self.signal
        );
        assert!(
            took <= TAKEOVER_WITHIN,
            "takeover took {took:?}, over lease TTL + one renewal + margin ({TAKEOVER_WITHIN:?})"
        );
        assert_eq!(counts(&after), shares(self.survivors));
        for shard in lost {
            let (owner, epoch) = &after[shard];
            assert!(
                epoch > &self.before[shard].1,
                "shard {shard} taken from {victim} by {owner} at epoch {epoch}, was {}",
                self.before[shard].1
            );
        }
        assert_moves_raised_epochs(self.before, &after);
        after
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_replica_is_fenced_then_rejoins_and_a_fourth_takes_its_share_postgres() {
    let Some(mut cluster) = Cluster::start(&["replica-a", "replica-b", "replica-c"]).await else {
        return;
    };
    let (before, _) = cluster
        .wait_balanced(BALANCE_WITHIN, "six shards split over three replicas")
        .await;
    // Records on every shard, some in flight as the victim freezes.
    let mut placed = cluster.place_round();
    cluster.wait_recorded(&placed).await;
    placed.extend(cluster.place_round());

    // SIGSTOP past its lease: the others take its shards under a higher
    // epoch and record what is placed meanwhile.
    let victim = "replica-c";
    let frozen_shards = owned_by(&before, victim);
    cluster.freeze(victim);
    let frozen = Instant::now();
    placed.extend(cluster.place_round());
    let takeover = Takeover {
        victim,
        signal: "SIGSTOP",
        since: frozen,
        before: &before,
        survivors: &[("replica-a", 3), ("replica-b", 3)],
    };
    let taken = takeover.assert_within(&cluster, &frozen_shards).await;
    placed.extend(cluster.place_round());
    cluster.wait_recorded(&placed).await;

    // SIGCONT: whatever it was about to write is refused by epoch (so
    // nothing is recorded twice), and it rejoins with its fair share.
    cluster.thaw(victim);
    let (rejoined, _) = cluster
        .wait_balanced(
            BALANCE_WITHIN,
            "the resumed replica rejoins with two shards",
        )
        .await;
    assert_eq!(
        counts(&rejoined),
        shares(&[("replica-a", 2), ("replica-b", 2), ("replica-c", 2)])
    );
    assert_moves_raised_epochs(&taken, &rejoined);
    let fenced = cluster.replica(victim).fenced_writes().await;
    println!("shards: {victim} had {fenced} writes refused by epoch after SIGCONT");
    placed.extend(cluster.place_round());
    cluster.assert_recorded_once(&placed).await;

    // A fourth replica: records placed before it starts, at every look
    // while the shards are handed over, and after.
    placed.extend(cluster.place_round());
    cluster.join("replica-d").await;
    let mut during = Vec::new();
    let (joined, took) = cluster
        .wait_balanced_while(BALANCE_WITHIN, "replica-d takes its share", || {
            let program = &cluster.net.programs[during.len() % SHARDS];
            during.push(cluster.place(program));
        })
        .await;
    println!(
        "shards: handed over to replica-d in {:.2} s, {} records placed meanwhile",
        took.as_secs_f64(),
        during.len()
    );
    placed.extend(during);
    // Sort order of ids ranks the replicas: the first two keep the extra shard.
    assert_eq!(
        counts(&joined),
        shares(&[
            ("replica-a", 2),
            ("replica-b", 2),
            ("replica-c", 1),
            ("replica-d", 1)
        ])
    );
    assert_moves_raised_epochs(&rejoined, &joined);
    placed.extend(cluster.place_round());
    cluster.assert_recorded_once(&placed).await;
    cluster.stop().await;
}
