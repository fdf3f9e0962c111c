//! The balancing rule: how many shards a replica should hold.
//!
//! Live replicas are ranked by id. With `shards` shards and `live`
//! replicas, each holds `shards / live`, and the first `shards % live` in
//! rank one more, so the quotas add up to the shard count, no replica holds
//! more than the fair share rounded up, and every replica agrees on every
//! quota without talking to the others. When a replica joins, those above
//! their new quota hand shards over; when one dies, its leases expire and
//! the others' quotas grow to cover them.

/// The quota of `me` among `live` (sorted ids) for `shards` shards; a
/// replica that does not see itself among the live ones (its heartbeat has
/// not landed yet) counts as the last.
pub(super) fn quota(shards: usize, live: &[String], me: &str) -> usize {
    let count = live.len().max(1);
    let rank = live
        .iter()
        .position(|id| id == me)
        .unwrap_or(count.saturating_sub(1));
    shards / count + usize::from(rank < shards % count)
}

/// The most a replica may take when it does not hand shards over
/// (`leases.rebalance = false`): the fair share rounded up.
pub(super) fn ceiling(shards: usize, live: usize) -> usize {
    shards.div_ceil(live.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("replica-{i}")).collect()
    }

    #[test]
    fn quotas_add_up_to_the_shards_and_differ_by_at_most_one() {
        for shards in 0..20 {
            for n in 1..8 {
                let live = ids(n);
                let quotas: Vec<usize> = live.iter().map(|me| quota(shards, &live, me)).collect();
                assert_eq!(quotas.iter().sum::<usize>(), shards, "{shards} over {n}");
                let (lo, hi) = (quotas.iter().min().unwrap(), quotas.iter().max().unwrap());
                assert!(hi - lo <= 1 && *hi <= ceiling(shards, n), "{quotas:?}");
            }
        }
    }

    #[test]
    fn six_shards_are_two_each_for_three_and_two_two_one_one_for_four() {
        let three = ids(3);
        assert!(three.iter().all(|me| quota(6, &three, me) == 2));
        let four = ids(4);
        let quotas: Vec<usize> = four.iter().map(|me| quota(6, &four, me)).collect();
        assert_eq!(quotas, [2, 2, 1, 1]);
    }

    #[test]
    fn a_replica_not_yet_seen_counts_as_the_last() {
        assert_eq!(quota(6, &ids(4), "zz-new"), 1);
        assert_eq!(quota(3, &[], "alone"), 3);
    }
}
