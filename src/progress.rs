//! Reads lm-eval's tqdm progress bars (`desc:  45%|████▌     | 45/100 [00:01<00:01, 40.00it/s]`).

use crate::model::Progress;

/// The progress a tqdm line reports, if it is one.
pub fn parse_tqdm_line(line: &str) -> Option<Progress> {
    let bar_start = line.find("%|")?;
    let after_bar = &line[bar_start + 2..];
    let counts = after_bar.split_once("| ")?.1;
    let counts = counts.split_whitespace().next()?;
    let (completed, total) = counts.split_once('/')?;
    let completed: u64 = completed.parse().ok()?;
    let total: u64 = total.parse().ok()?;
    if total == 0 || completed > total {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let percent = (completed as f64 * 1000.0 / total as f64).round() / 10.0;
    Some(Progress { percent, completed, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tqdm_bar() {
        let line = "Running loglikelihood requests:  45%|████▌     | 45/100 [00:01<00:01, 40.00it/s]";
        assert_eq!(parse_tqdm_line(line), Some(Progress { percent: 45.0, completed: 45, total: 100 }));
    }

    #[test]
    fn reads_a_finished_bar_and_ignores_other_lines() {
        assert_eq!(parse_tqdm_line("INFO 2026-11-28 Building contexts for arc_easy"), None);
        assert_eq!(parse_tqdm_line("100%|██████████| 3/3 [00:00<00:00, 1234.5it/s]").map(|p| p.percent), Some(100.0));
        assert_eq!(parse_tqdm_line("x: 10%|█| 1/0 [..]"), None);
    }

    #[test]
    fn reads_real_lm_eval_output() {
        // stderr of `lm_eval run --model dummy --tasks lmeval_aas_slow --limit 200`, captured from lm-eval 0.4.13.
        let stderr = include_str!("../tests/fixtures/lm-eval/lmeval_aas_slow.limit200.dummy.stderr.txt");
        let bars: Vec<Progress> = stderr.split(['\n', '\r']).filter_map(parse_tqdm_line).collect();
        assert!(bars.len() > 10, "every tqdm update is read");
        assert!(bars.iter().any(|p| p.completed > 0 && p.completed < p.total), "progress in between is seen");
        assert_eq!(bars.last(), Some(&Progress { percent: 100.0, completed: 200, total: 200 }));
    }
}
