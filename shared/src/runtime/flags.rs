//! Value parsers for flags that only make sense within a range: a duration, a count or a
//! rate outside it is refused when the command line is parsed, with a one-line reason that
//! names the flag (clap adds the flag; these say what is allowed), instead of starting a
//! process whose behaviour nobody can predict (a zero timeout answering everything 504, a
//! group of zero writes).

use std::time::Duration;

use clap::builder::{RangedU64ValueParser, TypedValueParser};

/// A `humantime` duration (`300ms`, `5s`, `24h`) within `min..=max`.
pub fn duration_in(min: Duration, max: Duration) -> impl TypedValueParser<Value = Duration> {
    move |text: &str| -> Result<Duration, String> {
        let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
        if duration < min || duration > max {
            return Err(format!(
                "must be from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(duration)
    }
}

/// An integer within `min..=max` (clap's own ranged parser: "0 is not in 1..=1024").
pub fn count_in<T>(min: u64, max: u64) -> RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    RangedU64ValueParser::new().range(min..=max)
}

/// A finite number above zero and at most `max` (requests per second).
pub fn positive_rate(max: f64) -> impl TypedValueParser<Value = f64> {
    move |text: &str| -> Result<f64, String> {
        let rate: f64 = text.trim().parse().map_err(|_| "not a number".to_owned())?;
        if !(rate.is_finite() && rate > 0.0 && rate <= max) {
            return Err(format!("must be a number above 0 and at most {max}"));
        }
        Ok(rate)
    }
}

/// A flag, a value outside its range, and what the refusal must say.
pub type OutOfRange = (&'static str, &'static str, &'static str);

/// The flags both binaries take (NATS and process options) that have a range.
pub const SHARED_OUT_OF_RANGE: [OutOfRange; 4] = [
    ("--nats-connect-timeout", "0s", "must be from 100ms to 5m"),
    ("--nats-connect-timeout", "1h", "must be from 100ms to 5m"),
    ("--runtime-threads", "0", "0 is not in 1.."),
    ("--runtime-threads", "many", "invalid digit"),
];

/// The flags both binaries take whose values are free-form (URLs, names, files, switches).
pub const SHARED_FREE_FORM: [&str; 12] = [
    "--nats-url",
    "--nats-token",
    "--nats-user",
    "--nats-password",
    "--nats-nkey-seed-file",
    "--nats-creds-file",
    "--nats-tls-ca",
    "--nats-tls-cert",
    "--nats-tls-key",
    "--nats-inbox-prefix",
    "--nats-tls-required",
    "--log-format",
];

/// Checks a binary's flag table against its parser: every case (the binary's own and the
/// shared ones) is refused with a message that names the flag and says what is allowed, and
/// every flag that takes a value is either checked or declared free-form, so that a new
/// numeric flag without a range cannot slip in. Returns what is wrong, one line each (for
/// the binaries' tests).
pub fn check_table(
    command: &clap::Command,
    own_out_of_range: &[OutOfRange],
    own_free_form: &[&str],
) -> Vec<String> {
    let out_of_range: Vec<OutOfRange> = own_out_of_range
        .iter()
        .chain(&SHARED_OUT_OF_RANGE)
        .copied()
        .collect();
    let free_form: Vec<&str> = own_free_form
        .iter()
        .chain(&SHARED_FREE_FORM)
        .copied()
        .collect();
    let mut wrong = Vec::new();
    for &(flag, value, expected) in &out_of_range {
        match command
            .clone()
            .try_get_matches_from([command.get_name(), &format!("{flag}={value}")])
        {
            Ok(_) => wrong.push(format!("{flag} {value}: accepted")),
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                if !first.contains(&format!("for '{flag} <")) || !first.contains(expected) {
                    wrong.push(format!("{flag} {value}: {first:?} (expected {expected:?})"));
                }
            }
        }
    }
    for argument in command.get_arguments() {
        let Some(long) = argument.get_long() else {
            continue;
        };
        let flag = format!("--{long}");
        let takes_value = argument.get_num_args().is_some_and(|n| n.takes_values())
            || argument.get_action().takes_values();
        let listed =
            out_of_range.iter().any(|(f, _, _)| *f == flag) || free_form.contains(&flag.as_str());
        if takes_value && !listed && !matches!(long, "help" | "version") {
            wrong.push(format!(
                "{flag}: neither range-checked nor declared free-form"
            ));
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Flags {
        #[arg(long, default_value = "1s", value_parser = duration_in(Duration::from_millis(1), Duration::from_secs(60)))]
        wait: Duration,
        #[arg(long, default_value_t = 1, value_parser = count_in::<usize>(1, 64))]
        items: usize,
        #[arg(long, default_value_t = 1.0, value_parser = positive_rate(1e6))]
        rate: f64,
    }

    #[test]
    fn values_outside_the_range_name_the_flag_and_the_range() {
        let cases = [
            (
                "a zero duration",
                ["--wait", "0s"],
                "'--wait <WAIT>': must be from 1ms to 1m",
            ),
            (
                "a duration too long",
                ["--wait", "2m"],
                "must be from 1ms to 1m",
            ),
            ("not a duration", ["--wait", "soon"], "'--wait <WAIT>'"),
            (
                "a zero count",
                ["--items", "0"],
                "'--items <ITEMS>': 0 is not in 1..=64",
            ),
            (
                "a count too large",
                ["--items", "65"],
                "65 is not in 1..=64",
            ),
            (
                "a zero rate",
                ["--rate", "0"],
                "'--rate <RATE>': must be a number above 0",
            ),
            (
                "a rate that is not finite",
                ["--rate", "inf"],
                "must be a number above 0",
            ),
            ("not a rate", ["--rate", "fast"], "not a number"),
        ];
        for (description, args, expected) in cases {
            let error = Flags::try_parse_from([&["test"][..], &args].concat())
                .expect_err(description)
                .to_string();
            assert!(error.contains(expected), "{description}: {error}");
        }
        let fine =
            Flags::try_parse_from(["test", "--wait", "1m", "--items", "64", "--rate", "0.5"])
                .unwrap();
        assert_eq!(
            (fine.wait, fine.items, fine.rate),
            (Duration::from_secs(60), 64, 0.5)
        );
    }
}
