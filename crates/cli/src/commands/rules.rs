//! `trailwatch rules list|test`: the loaded rules, and their own tests.

use std::process::ExitCode;
use std::sync::Arc;

use trailwatch_core::rules::{run_tests, RuleSet};

use crate::cli::{RulesArgs, RulesCommand, RulesDirArgs};
use crate::pipeline;

pub async fn rules(args: RulesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RulesCommand::List(dir) => list(&dir),
        RulesCommand::Test(dir) => test(&dir),
    }
}

/// Loads the rules, or prints every load error (file:line:column: reason) and fails.
fn load(args: &RulesDirArgs) -> anyhow::Result<Result<Arc<RuleSet>, usize>> {
    match pipeline::load_rules(args.rules.as_deref(), !args.no_builtin)? {
        Ok(set) => Ok(Ok(set)),
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            eprintln!("{} rule file error(s); no rules loaded", errors.len());
            Ok(Err(errors.len()))
        }
    }
}

fn list(args: &RulesDirArgs) -> anyhow::Result<ExitCode> {
    let set = match load(args)? {
        Ok(set) => set,
        Err(_) => return Ok(ExitCode::FAILURE),
    };
    let mut out = String::new();
    for rule in set.rules() {
        let kind = match (&rule.threshold, rule.indexed) {
            (Some(t), _) => format!("threshold >{} in {}", t.above, pipeline::duration_text(t.window_ms)),
            (None, true) => "indexed".to_owned(),
            (None, false) => "every event".to_owned(),
        };
        out.push_str(&format!("{:<42} {:<13} {:<22} {:>2} tests  {}\n         {}\n", rule.id, rule.level.as_str(), kind, rule.tests, rule.title, rule.path));
    }
    out.push_str(&format!("{} rules\n", set.rules().len()));
    super::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn test(args: &RulesDirArgs) -> anyhow::Result<ExitCode> {
    let set = match load(args)? {
        Ok(set) => set,
        Err(_) => return Ok(ExitCode::FAILURE),
    };
    let outcomes = run_tests(&set);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    let rules_without_tests: Vec<_> = set.rules().iter().filter(|r| r.tests == 0).map(|r| r.id.as_str()).collect();
    let mut out = String::new();
    for outcome in &failed {
        out.push_str(&format!("FAIL {} / {}: {}  ({})\n", outcome.rule_id, outcome.name, outcome.reason.as_deref().unwrap_or("failed"), outcome.path));
    }
    out.push_str(&format!(
        "{} rules, {} tests: {} passed, {} failed{}\n",
        set.rules().len(),
        outcomes.len(),
        outcomes.len() - failed.len(),
        failed.len(),
        if rules_without_tests.is_empty() { String::new() } else { format!("; without tests: {}", rules_without_tests.join(", ")) }
    ));
    super::emit(&out)?;
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
