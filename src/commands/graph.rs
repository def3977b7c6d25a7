//! `reconcile graph`: the dependency graph as DOT, from the manifest alone or (`--plan`) coloured with
//! the plan's actions.

use std::collections::HashMap;

use petgraph::dot::{Config, Dot};
use petgraph::graph::DiGraph;
use serde_json::json;

use super::{CliError, Exit, load_manifest, open_state};
use crate::cli::{Global, GraphArgs};
use crate::manifest::{Kind, Manifest};
use crate::plan::{self, Action, Plan};
use crate::state::StackState;

/// One node: a resource, and what the plan does to it (with `--plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The resource key (a leftover of an interrupted replacement: `key (previous)`).
    pub name: String,
    pub kind: Kind,
    pub action: Option<Shown>,
}

/// What the plan does to a node, as the graph colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
    Forget,
    Moved,
}

impl Shown {
    fn word(self) -> &'static str {
        match self {
            Shown::NoOp => "no change",
            Shown::Create => "create",
            Shown::Update => "update",
            Shown::Replace => "replace",
            Shown::Delete => "delete",
            Shown::Forget => "forget",
            Shown::Moved => "moved",
        }
    }
    fn colour(self) -> &'static str {
        match self {
            Shown::NoOp => "white",
            Shown::Create => "palegreen",
            Shown::Update => "khaki",
            Shown::Replace => "orange",
            Shown::Delete => "lightcoral",
            Shown::Forget => "lightgrey",
            Shown::Moved => "lightblue",
        }
    }
}

/// The dependency graph: nodes, and an edge from each one to what it depends on.
pub type Graph = DiGraph<Node, ()>;

pub async fn run(g: &Global, args: &GraphArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let graph = if args.plan {
        let store = open_state(g).await?;
        let computed = async {
            let state = store.load(&manifest.stack).await?;
            let aws = super::connect_for(g, &manifest).await?;
            crate::identity::check(&store, &manifest.stack, &aws).await?;
            let pending = store.pending_operations(&manifest.stack).await?;
            let plan = plan::compute(&manifest, &state, &pending, &aws).await?;
            Ok::<_, CliError>(of_plan(&plan, &state))
        }
        .await;
        store.close().await;
        computed?
    } else {
        of_manifest(&manifest)
    };
    if g.json {
        let nodes: Vec<_> = graph
            .node_weights()
            .map(|n| {
                let mut v = json!({"name": n.name, "type": n.kind});
                if let Some(a) = n.action {
                    v["action"] = json!(a.word().replace(' ', "_"));
                }
                v
            })
            .collect();
        let edges: Vec<_> =
            graph.raw_edges().iter().map(|e| json!({"from": graph[e.source()].name, "to": graph[e.target()].name})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"nodes": nodes, "edges": edges})).unwrap_or_default());
    } else {
        print!("{}", dot(&graph));
    }
    Ok(Exit::Ok)
}

/// The manifest's resources and their dependencies (references and `depends_on`).
pub fn of_manifest(manifest: &Manifest) -> Graph {
    let nodes =
        manifest.resources.iter().map(|r| (Node { name: r.name.clone(), kind: r.kind, action: None }, r.deps.iter().cloned().collect()));
    build(nodes.collect())
}

/// Every resource the plan touches or keeps, coloured with its action: what the manifest declares with
/// its dependencies, and what the plan deletes with those the state recorded for it.
pub fn of_plan(plan: &Plan, state: &StackState) -> Graph {
    let nodes = plan.resources.iter().map(|c| {
        let action = if c.moved_from.is_some() && c.action == Action::NoOp {
            Shown::Moved
        } else {
            match c.action {
                Action::NoOp => Shown::NoOp,
                Action::Create => Shown::Create,
                Action::Update => Shown::Update,
                Action::Replace => Shown::Replace,
                Action::Delete => Shown::Delete,
                Action::Forget => Shown::Forget,
            }
        };
        let name = if c.deposed { format!("{} (previous)", c.name) } else { c.name.clone() };
        let deps = if matches!(c.action, Action::Delete | Action::Forget) && !c.deposed {
            state.resources.get(&c.name).map(|s| s.depends_on.clone()).unwrap_or_default()
        } else {
            c.depends_on.clone()
        };
        (Node { name, kind: c.kind, action: Some(action) }, deps)
    });
    build(nodes.collect())
}

fn build(nodes: Vec<(Node, Vec<String>)>) -> Graph {
    let mut graph = Graph::new();
    let mut index = HashMap::new();
    let mut edges = Vec::new();
    for (node, deps) in nodes {
        let name = node.name.clone();
        let i = graph.add_node(node);
        index.insert(name, i);
        edges.push((i, deps));
    }
    for (from, deps) in edges {
        for d in deps {
            // A dependency on what is neither in the manifest nor the plan (a record the state kept)
            // is not drawn.
            if let Some(&to) = index.get(&d) {
                graph.add_edge(from, to, ());
            }
        }
    }
    graph
}

/// DOT text: each node labelled with its key and type (and the plan's action, filled with its
/// colour), an edge from each resource to what it depends on.
pub fn dot(graph: &Graph) -> String {
    let node_attrs = |_: &Graph, (_, n): (petgraph::graph::NodeIndex, &Node)| {
        let mut label = format!("{}\\n{}", escape(&n.name), n.kind);
        let mut attrs = String::new();
        if let Some(a) = n.action {
            label.push_str(&format!("\\n({})", a.word()));
            attrs = format!(", style = filled, fillcolor = {}", a.colour());
        }
        format!("label = \"{label}\", shape = box{attrs} ")
    };
    let dot = Dot::with_attr_getters(graph, &[Config::NodeNoLabel, Config::EdgeNoLabel], &|_, _| String::new(), &node_attrs);
    format!("{dot:?}")
}

/// A DOT string's content: quotes and backslashes escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: Kind, action: Option<Shown>) -> (Node, Vec<String>) {
        (Node { name: name.into(), kind, action }, vec![])
    }

    #[test]
    fn nodes_carry_key_and_type_and_edges_point_at_dependencies() {
        let mut f = node("fn", Kind::LambdaFunction, None);
        f.1 = vec!["role".into(), "gone".into()];
        let graph = build(vec![node("role", Kind::IamRole, None), f]);
        let text = dot(&graph);
        assert!(text.starts_with("digraph {"), "{text}");
        assert!(text.contains("0 [ label = \"role\\naws_iam_role\", shape = box ]"), "{text}");
        assert!(text.contains("1 [ label = \"fn\\naws_lambda_function\", shape = box ]"), "{text}");
        assert!(text.contains("1 -> 0 [ ]"), "{text}");
        assert_eq!(graph.edge_count(), 1, "a dependency on an unknown key is not drawn");
    }

    #[test]
    fn plan_actions_fill_the_nodes() {
        let graph =
            build(vec![node("a", Kind::LogGroup, Some(Shown::Create)), node("b (previous)", Kind::Deployment, Some(Shown::Delete))]);
        let text = dot(&graph);
        assert!(
            text.contains("label = \"a\\naws_cloudwatch_log_group\\n(create)\", shape = box, style = filled, fillcolor = palegreen"),
            "{text}"
        );
        assert!(
            text.contains(
                "label = \"b (previous)\\naws_api_gateway_deployment\\n(delete)\", shape = box, style = filled, fillcolor = lightcoral"
            ),
            "{text}"
        );
    }
}
