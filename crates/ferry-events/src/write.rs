//! Writes an event's JSON text straight into its buffer, field by field: no tree of
//! `serde_json::Value`s to build, sort and drop for every event (that tree was most of a
//! stream sink's CPU per event). Fields come in the order given, which is Debezium's.

use serde::Serialize;

/// One JSON object being written into `out`.
pub(crate) struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    /// Opens an object.
    pub(crate) fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Starts field `name` (a name that needs no escaping) and returns where its value
    /// goes.
    pub(crate) fn field(&mut self, name: &str) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// Field `name` with the JSON of `value`.
    pub(crate) fn value(&mut self, name: &str, value: &(impl Serialize + ?Sized)) {
        put(self.field(name), value);
    }

    /// Starts field `name`, any name (escaped), and returns where its value goes.
    pub(crate) fn escaped_field(&mut self, name: &str) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        put(self.out, name);
        self.out.push(b':');
        self.out
    }

    /// Closes the object.
    pub(crate) fn close(self) {
        self.out.push(b'}');
    }
}

/// Appends the JSON of `value`.
pub(crate) fn put(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("writing JSON into memory cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_names_are_escaped() {
        let mut out = Vec::new();
        let mut object = Object::open(&mut out);
        object.value("b", &1);
        object.value("a", "x\"y");
        object
            .escaped_field("odd \"name\"")
            .extend_from_slice(b"null");
        object.close();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":1,"a":"x\"y","odd \"name\"":null}"#
        );
    }
}
