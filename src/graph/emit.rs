//! Writing a graph out as a StableHLO module (MLIR text).
//!
//! Deterministic: the same graph gives the same bytes. Only nodes that an
//! output depends on are written, in node order, named `%0, %1, ...` in that
//! order; every parameter is an argument of `@main` (`%argN`) whether used or
//! not, so the calling convention does not change with the outputs. Each op
//! carries `loc("<scope>/<op>")` naming the layer that made it.

use std::fmt::Write;

use super::ir::{Graph, Tensor};
use super::ops::{Op, Operand};
use super::shape::Result;
use crate::program::{Program, TensorSpec};

/// How the entry function is declared.
#[derive(Clone, Debug, Default)]
pub struct EmitOptions {
    /// Number of replicas the program is compiled for (module attribute).
    pub num_replicas: usize,
    /// `(input, output)` pairs: the input's buffer may be reused for that
    /// output when the caller donates it (`tf.aliasing_output`).
    pub aliases: Vec<(usize, usize)>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Graph {
    /// The StableHLO text of a function of this graph's parameters
    /// returning `outputs`.
    pub fn to_stablehlo(&self, outputs: &[Tensor], options: &EmitOptions) -> Result<String> {
        for &o in outputs {
            self.check("output", o)?;
        }
        let mut live = vec![false; self.nodes.len()];
        for &o in outputs {
            live[o.index()] = true;
        }
        for i in (0..self.nodes.len()).rev() {
            if live[i] {
                for t in &self.nodes[i].inputs {
                    live[t.index()] = true;
                }
            }
        }

        let mut names: Vec<String> = vec![String::new(); self.nodes.len()];
        let mut args = Vec::new();
        for (k, p) in self.parameters.iter().enumerate() {
            names[p.index()] = format!("%arg{k}");
            let node = self.node(*p);
            let Op::Parameter(param) = &node.op else { unreachable!("parameters list holds only parameters") };
            let alias = options.aliases.iter().find(|(i, _)| *i == k).map(|(_, o)| format!(" {{tf.aliasing_output = {o} : i32}}")).unwrap_or_default();
            args.push(format!("%arg{k}: {}{alias} loc(\"{}\")", node.shape.mlir(), escape(&param.name)));
        }

        let mut body = String::new();
        let mut next = 0usize;
        for (i, node) in self.nodes.iter().enumerate() {
            if !live[i] || matches!(node.op, Op::Parameter(_)) {
                continue;
            }
            let result = format!("%{next}");
            next += 1;
            let operands: Vec<Operand> = node.inputs.iter().map(|t| Operand { name: &names[t.index()], shape: &self.nodes[t.index()].shape }).collect();
            let prim = node.op.prim();
            let loc_name = if node.scope.is_empty() { prim.name().to_string() } else { format!("{}/{}", node.scope, prim.name()) };
            let loc = format!("loc(\"{}\")", escape(&loc_name));
            let text = prim.emit(&result, &operands, &node.shape, &loc);
            for line in text.lines() {
                let _ = writeln!(body, "    {line}");
            }
            names[i] = result;
        }

        let result_types: Vec<String> = outputs.iter().map(|o| self.shape(*o).mlir()).collect();
        let result_names: Vec<&str> = outputs.iter().map(|o| names[o.index()].as_str()).collect();
        let replicas = options.num_replicas.max(1);
        let mut out = String::new();
        let _ = writeln!(out, "module @{} attributes {{mhlo.num_partitions = 1 : i32, mhlo.num_replicas = {replicas} : i32}} {{", sanitize(self.name()));
        let _ = writeln!(out, "  func.func public @main({}) -> ({}) {{", args.join(", "), result_types.join(", "));
        out.push_str(&body);
        let _ = writeln!(out, "    return {} : {}", result_names.join(", "), result_types.join(", "));
        let _ = writeln!(out, "  }}");
        let _ = writeln!(out, "}}");
        Ok(out)
    }

    /// The function as a PJRT program, with its input signature declared so
    /// that every execution is checked before it reaches the plugin.
    pub fn to_program(&self, outputs: &[Tensor], options: &EmitOptions) -> Result<Program> {
        let text = self.to_stablehlo(outputs, options)?;
        let inputs = self.parameters.iter().map(|p| TensorSpec { dtype: self.dtype(*p), dims: self.dims(*p).to_vec() }).collect();
        Ok(Program::stablehlo(self.name(), text).with_inputs(inputs))
    }
}

/// A module name MLIR accepts as a bare identifier.
fn sanitize(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') { s } else { format!("m_{s}") }
}
