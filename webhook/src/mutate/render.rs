//! The data plan rendered from the annotations (`datamon_plan::Plan`, the one schema),
//! checked with the plan's own validation, whose field names are mapped back to the
//! annotations the user wrote.

use datamon_plan::validate::is_name;
use datamon_plan::{InputMode, Lifecycle, Plan, Sidecar, APP, DEFAULT_SIDECAR};

use super::annotations::{
    Problem, Request, COORDINATION, DATABASE, DEADLINES, INPUT, OUTPUT, WRAP,
};
use super::database;

/// Participant name of the one agent process the webhook injects.
pub(crate) const PARTICIPANT: &str = DEFAULT_SIDECAR;

/// The wrapper participant names of the containers `wrap` names: none (the plan's default,
/// [`APP`]) for one container or fewer, else `app-<container>` for each (cut to 63
/// characters), or the problem when two names cannot be told apart.
pub(crate) fn app_participants(wrap: &[String]) -> Result<Vec<String>, Problem> {
    if wrap.len() <= 1 {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = Vec::new();
    for container in wrap {
        let mut name: String = format!("{APP}-{container}").chars().take(63).collect();
        while name.ends_with('-') {
            name.pop();
        }
        if !is_name(&name) || name == PARTICIPANT {
            return Err(Problem::new(
                WRAP,
                format!("container {container:?} gives no valid participant name ({name:?}): rename the container (lowercase letters, digits and `-`)"),
            ));
        }
        if let Some(i) = names.iter().position(|n| *n == name) {
            return Err(Problem::new(
                WRAP,
                format!(
                    "containers {:?} and {container:?} both give the participant name {name:?} (app-<container>, cut to 63 characters): give them names that differ within their first 59 characters",
                    wrap[i]
                ),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// Whether the plan needs an agent beside the application (mounts to serve, outputs to
/// upload, databases to run); without, one plain init container does everything.
pub(crate) fn needs_sidecar(req: &Request) -> bool {
    !req.outputs.is_empty()
        || !req.databases.is_empty()
        || req.inputs.iter().any(|i| i.mode == InputMode::Mount)
}

/// The plan for `req`, with one sidecar doing everything (`native`: as a native sidecar).
pub(crate) fn render(req: &Request, native: bool) -> Result<Plan, Vec<Problem>> {
    let mut plan = Plan {
        store: req.store.clone(),
        inputs: req.inputs.clone(),
        outputs: req.outputs.clone(),
        databases: req.databases.iter().map(database::to_plan).collect(),
        deadlines: req.deadlines,
        ..Plan::default()
    };
    if let Some(c) = &req.coordination {
        plan.coordination = c.clone();
    }
    // Only a wrapped application is a participant (download-only plans wrap nothing).
    let mut wrap_problem = None;
    if needs_sidecar(req) {
        match app_participants(&req.wrap) {
            Ok(apps) => plan.apps = apps,
            Err(p) => wrap_problem = Some(p),
        }
    }
    let lifecycle = if native && needs_sidecar(req) {
        Lifecycle::Native
    } else {
        Lifecycle::Classic
    };
    plan.sidecars = vec![Sidecar {
        name: PARTICIPANT.to_string(),
        inputs: plan.inputs.iter().map(|i| i.name.clone()).collect(),
        outputs: plan.outputs.iter().map(|o| o.name.clone()).collect(),
        databases: plan.databases.iter().map(|d| d.name.clone()).collect(),
        lifecycle,
    }];
    let mut problems: Vec<Problem> = match plan.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e
            .problems
            .into_iter()
            .map(|p| to_annotation(&plan, &p.field, &p.problem))
            .collect(),
    };
    problems.extend(wrap_problem);
    if plan.coordination.parent().is_none() {
        problems.push(Problem::new(
            COORDINATION,
            "the root directory cannot be a volume: use a directory such as /var/run/datamon",
        ));
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// Maps a plan field (`inputs[1].path`) to the annotation that set it, in the field and
/// in the text.
fn to_annotation(plan: &Plan, field: &str, problem: &str) -> Problem {
    let mut text = problem.to_string();
    for (i, input) in plan.inputs.iter().enumerate() {
        text = text.replace(
            &format!("inputs[{i}].path"),
            &format!("the path of {INPUT}{}", input.name),
        );
    }
    for (i, output) in plan.outputs.iter().enumerate() {
        text = text.replace(
            &format!("outputs[{i}].path"),
            &format!("the path of {OUTPUT}{}", output.name),
        );
    }
    for (i, db) in plan.databases.iter().enumerate() {
        for (field, what) in [("socket_dir", "socket directory"), ("dir", "directory")] {
            text = text.replace(
                &format!("databases[{i}].{field}"),
                &format!("the {what} of {DATABASE}{}", db.name),
            );
        }
    }
    let problem = text.as_str();
    let indexed = |prefix: &str| -> Option<(usize, &str)> {
        let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
        let (i, rest) = rest.split_once(']')?;
        Some((i.parse().ok()?, rest.trim_start_matches('.')))
    };
    let with_field = |sub: &str| {
        if sub.is_empty() {
            problem.to_string()
        } else {
            format!("field `{sub}`: {problem}")
        }
    };
    if let Some((i, sub)) = indexed("inputs") {
        if let Some(input) = plan.inputs.get(i) {
            return Problem::new(format!("{INPUT}{}", input.name), with_field(sub));
        }
    }
    if let Some((i, sub)) = indexed("outputs") {
        if let Some(output) = plan.outputs.get(i) {
            return Problem::new(format!("{OUTPUT}{}", output.name), with_field(sub));
        }
    }
    if let Some((i, sub)) = indexed("databases") {
        if let Some(db) = plan.databases.get(i) {
            return Problem::new(format!("{DATABASE}{}", db.name), with_field(sub));
        }
    }
    if field == "coordination" {
        return Problem::new(COORDINATION, problem);
    }
    if field.starts_with("apps[") {
        return Problem::new(WRAP, problem);
    }
    if let Some(sub) = field.strip_prefix("deadlines.") {
        return Problem::new(DEADLINES, with_field(sub));
    }
    Problem::new(
        "datamon.io (the rendered plan)",
        format!("plan field {field}: {problem} (a bug of the webhook: please report it)"),
    )
}
