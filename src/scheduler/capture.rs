//! When the window loss of a monitored address asks for a capture (`capture.on_loss`): as it
//! goes above the target's `alert.loss`. The daemon's capture side decides whether the
//! capture starts (the target's `capture.every`, the global cap).

use crate::config::TargetConfig;

/// The crossing of one address's window loss over its threshold, with hysteresis: once it
/// fired, it fires again only after the loss went below the threshold. The loss is judged only
/// over a full window (`window` probes), as `pingscope_window_loss_ratio` then tells it, so a
/// monitor that just started (or restarted on reload) does not capture on its first probes.
///
/// The rule is the config's; an address keeps only whether it is armed (see
/// [`LossWatch::crossed`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LossWatch {
    threshold: f64,
    window: usize,
}

impl LossWatch {
    /// The watch of a target with `capture.on_loss` and an `alert.loss`; `None` otherwise.
    pub(crate) fn of(cfg: &TargetConfig) -> Option<Self> {
        let threshold = cfg
            .options
            .alert
            .loss
            .filter(|_| cfg.options.capture.on_loss)?;
        Some(Self {
            threshold,
            window: cfg.options.window.max(1),
        })
    }

    /// Takes the window after a settled probe (`probes` in it, `loss_ratio` lost) and the
    /// address's `armed` flag (true at the start); true when the loss just went above the
    /// threshold (above, as the shipped loss alert compares, so a threshold of 0 means "any
    /// loss"). Disarms on firing, re-arms when the loss is at or below the threshold.
    pub(crate) fn crossed(&self, armed: &mut bool, probes: usize, loss_ratio: f64) -> bool {
        if probes < self.window {
            return false;
        }
        let over = loss_ratio > self.threshold;
        if !over {
            *armed = true;
            return false;
        }
        std::mem::replace(armed, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Window;

    fn watch(threshold: f64, window: usize) -> LossWatch {
        LossWatch { threshold, window }
    }

    /// Feeds `pattern` ('.' reply, 'x' lost) through a window as the recorder does and returns
    /// the indexes of the probes at which the watch fired.
    fn fired(threshold: f64, window: usize, pattern: &str) -> Vec<usize> {
        let mut w = Window::new(window);
        let watch = watch(threshold, window);
        let mut armed = true;
        let mut out = Vec::new();
        for (i, c) in pattern.chars().enumerate() {
            w.push((c == '.').then_some(0.001));
            let g = w.gauges();
            if watch.crossed(&mut armed, g.probes, g.loss_ratio) {
                out.push(i);
            }
        }
        out
    }

    #[test]
    fn scenarios() {
        let cases: &[(&str, f64, usize, &str, &[usize])] = &[
            // Two lost in any ten: 0.2, under 0.3.
            ("below never fires", 0.3, 10, "..x....x....x....x..", &[]),
            // 1.0 at the second probe, but the window is full only at the tenth: 0.2.
            ("not before the window is full", 0.1, 10, "xx........", &[9]),
            // 0.25 is not above 0.25; 0.5 is.
            ("at the threshold is not above it", 0.25, 4, "...x..", &[]),
            ("above the threshold fires", 0.25, 4, "...xx.", &[4]),
            // 0.4, 0.2, 0.4, ...: never at or below 0.15, so one crossing, not one per probe.
            (
                "hovering above it fires once",
                0.15,
                5,
                "x.x..x.x..x.x..x.x..",
                &[4],
            ),
            // Re-armed by a window without loss (at 11 and at 19), then crossing again.
            (
                "fires again after going below",
                0.15,
                5,
                "....x.x......xx.....x.x..",
                &[4, 13, 20],
            ),
            ("zero means any loss", 0.0, 3, "...x....x", &[3, 8]),
            ("one is never exceeded", 1.0, 3, "x.xxx.xxx", &[]),
        ];
        for (name, threshold, window, pattern, want) in cases {
            assert_eq!(
                fired(*threshold, *window, pattern),
                *want,
                "{name}: {pattern}"
            );
        }
    }

    #[test]
    fn only_targets_with_on_loss_and_a_loss_threshold_are_watched() {
        let target = |extra: &str| {
            let yaml = format!("targets:\n  - {{host: 192.0.2.1, window: 20{extra}}}\n");
            let config = crate::config::parse_str(&yaml, "t.yml", std::path::Path::new(""))
                .unwrap_or_else(|e| panic!("{e}"));
            LossWatch::of(&config.targets[0])
        };
        assert_eq!(target(""), None);
        assert_eq!(
            target(", alert: {loss: 0.1}"),
            None,
            "on_loss is off by default"
        );
        assert_eq!(
            target(", alert: {loss: 0.1}, capture: {on_loss: true}"),
            Some(watch(0.1, 20))
        );
    }
}
