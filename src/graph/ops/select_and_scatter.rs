//! `select_and_scatter`: for each window of `operand`, add the matching
//! element of `source` to the position of the window's maximum (the first
//! one, in row-major order, when tied). It is max-pooling's gradient.

use super::{Op, Operand, Primitive, WindowSpec, compare::compare_type, non_differentiable, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, shape_err};

#[derive(Clone, Debug)]
pub(crate) struct SelectAndScatter {
    pub spec: WindowSpec,
}

impl Primitive for SelectAndScatter {
    fn name(&self) -> &'static str {
        "select_and_scatter"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let (x, src) = (inputs[0], inputs[1]);
        let out = self.spec.output_dims(self.name(), &inputs[..1])?;
        if src.dims != out || src.dtype != x.dtype {
            return shape_err(self.name(), inputs, format!("source must have the pooled shape {out:?} and the operand's type"));
        }
        Ok(x.clone())
    }

    /// Not differentiable here: it only appears as max-pooling's gradient,
    /// and no model differentiates twice. (Its rule would be linear in
    /// `source`: gather the cotangent at each window's selected position.)
    fn vjp(&self, _g: &mut Graph, _inputs: &[Tensor], _output: Tensor, _cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        non_differentiable(self.name())
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let dtype = args[0].shape.dtype;
        let scalar = Shape::scalar(dtype);
        let pred = Shape::scalar(crate::tensor::DType::Pred);
        let (t, p) = (scalar.mlir(), pred.mlir());
        let tag = super::helper_name(result, "r");
        let tag = tag.trim_start_matches('%');
        let init = super::helper_name(result, "init");
        let select = format!(
            "{{\n  ^bb0(%{tag}_a: {t}, %{tag}_b: {t}):\n    %{tag}_ge = stablehlo.compare  GE, %{tag}_a, %{tag}_b,  {} : ({t}, {t}) -> {p}\n    stablehlo.return %{tag}_ge : {p}\n}}",
            compare_type(dtype)
        );
        let scatter = super::binary_region(&format!("{tag}_s"), "stablehlo.add", &scalar, &scalar);
        let operands = [
            Operand { name: args[0].name, shape: args[0].shape },
            Operand { name: args[1].name, shape: args[1].shape },
            Operand { name: &init, shape: &scalar },
        ];
        format!(
            "{init} = stablehlo.constant dense<{}> : {t} {loc}\n{result} = \"stablehlo.select_and_scatter\"({}, {}, {init}) ({select}, {scatter}) {{{}}} : {} {loc}",
            super::constant::float_literal(0.0, dtype),
            args[0].name,
            args[1].name,
            self.spec.attributes(),
            signature(&operands, out)
        )
    }
}

impl Graph {
    pub fn select_and_scatter(&mut self, operand: Tensor, source: Tensor, spec: WindowSpec) -> Result<Tensor> {
        self.push(Op::SelectAndScatter(SelectAndScatter { spec }), &[operand, source])
    }
}
