//! Ranking quality of a binary scorer: AUC over all pairs, and gAUC (the mean of per-user AUCs,
//! weighted by the user's events), which removes the between-user part that a user bias alone wins.

use std::collections::BTreeMap;

/// Area under the ROC curve; ties count one half. `None` without both classes.
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney U from average ranks, so tied scores share their ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| labels[k]).count() as f64 * average_rank;
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean per-group AUC weighted by group size, over groups that have both classes.
pub fn gauc(groups: &[u32], scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut by_group: BTreeMap<u32, (Vec<f32>, Vec<bool>)> = BTreeMap::new();
    for ((&g, &s), &l) in groups.iter().zip(scores).zip(labels) {
        let entry = by_group.entry(g).or_default();
        entry.0.push(s);
        entry.1.push(l);
    }
    let (mut total, mut weight) = (0.0, 0.0);
    for (s, l) in by_group.values() {
        if let Some(a) = auc(s, l) {
            total += a * s.len() as f64;
            weight += s.len() as f64;
        }
    }
    (weight > 0.0).then(|| total / weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_half_ties() {
        // Positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) = 3/4.
        assert_eq!(auc(&[0.9, 0.5, 0.4, 0.1], &[true, false, true, false]), Some(0.75));
        // A tie between a positive and a negative counts one half: (1 + 0.5) / 2.
        assert_eq!(auc(&[0.3, 0.3, 0.1], &[true, false, false]), Some(0.75));
        assert_eq!(auc(&[0.3, 0.2], &[true, true]), None);
    }

    #[test]
    fn gauc_weights_users_by_events_and_skips_single_class_users() {
        let groups = [1, 1, 1, 2, 2, 3];
        let scores = [0.9, 0.1, 0.5, 0.2, 0.8, 0.4];
        let labels = [true, false, false, true, false, true];
        // User 1: AUC 1 over 3 events; user 2: AUC 0 over 2; user 3 has one class only.
        assert!((gauc(&groups, &scores, &labels).unwrap() - 3.0 / 5.0).abs() < 1e-12);
    }
}
