//! Building a JSON Patch of explicit `add`/`replace` operations against the pod's own JSON.
//! Never a re-serialization of typed structs: a pod from an API server newer than our
//! Kubernetes types can carry fields those types do not know, and a patch computed from
//! the typed copy would silently remove them. Appending to an array that the pod lacks
//! creates it once, then appends.

use std::collections::HashSet;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::Value;

/// Operations against one document.
pub(crate) struct PatchBuilder<'a> {
    doc: &'a Value,
    ops: Vec<PatchOperation>,
    created: HashSet<String>,
}

/// A JSON Pointer from its unescaped tokens.
pub(crate) fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

impl<'a> PatchBuilder<'a> {
    /// A builder for operations on `doc`.
    pub(crate) fn new(doc: &'a Value) -> Self {
        Self {
            doc,
            ops: Vec::new(),
            created: HashSet::new(),
        }
    }

    /// Sets the member at `path` (`add` creates it or replaces its value; its parent must
    /// exist).
    pub(crate) fn set(&mut self, path: &[&str], value: Value) {
        let path = pointer(path);
        if self.doc.pointer(path.as_str()).is_some() {
            self.ops
                .push(PatchOperation::Replace(ReplaceOperation { path, value }));
        } else {
            self.ops
                .push(PatchOperation::Add(AddOperation { path, value }));
        }
    }

    /// Appends `value` to the array at `path`, creating the array when the document has
    /// none there (or has `null`).
    pub(crate) fn push(&mut self, path: &[&str], value: Value) {
        let ptr = pointer(path);
        let exists = matches!(self.doc.pointer(ptr.as_str()), Some(Value::Array(_)))
            || self.created.contains(ptr.as_str());
        if exists {
            let mut end = ptr;
            end.push_back("-");
            self.ops
                .push(PatchOperation::Add(AddOperation { path: end, value }));
        } else {
            self.created.insert(ptr.as_str().to_string());
            self.ops.push(PatchOperation::Add(AddOperation {
                path: ptr,
                value: Value::Array(vec![value]),
            }));
        }
    }

    /// The patch.
    pub(crate) fn finish(self) -> Patch {
        Patch(self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn push_creates_then_appends_and_escapes() {
        let mut doc = json!({"a": {"list": [1]}, "m": {"x/y": 1}, "n": null});
        let mut b = PatchBuilder::new(&doc);
        b.push(&["a", "list"], json!(2));
        b.push(&["a", "new"], json!(1));
        b.push(&["a", "new"], json!(2));
        b.push(&["n"], json!(0));
        b.set(&["m", "x/y"], json!(2));
        b.set(&["m", "a~b"], json!(3));
        let p = b.finish();
        json_patch::patch(&mut doc, &p).unwrap();
        assert_eq!(
            doc,
            json!({"a": {"list": [1, 2], "new": [1, 2]}, "m": {"x/y": 2, "a~b": 3}, "n": [0]})
        );
    }
}
