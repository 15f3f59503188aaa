//! Identifiers as Go Machinery makes them: a prefix and a lowercase hyphenated UUIDv4.

/// `task_<uuid4>`
pub fn task_id() -> String {
    format!("task_{}", uuid::Uuid::new_v4())
}

/// `group_<uuid4>`
pub fn group_id() -> String {
    format!("group_{}", uuid::Uuid::new_v4())
}

/// `chord_<uuid4>`
pub fn chord_id() -> String {
    format!("chord_{}", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes_and_lowercase_v4() {
        let id = super::task_id();
        assert!(id.starts_with("task_"));
        let u = uuid::Uuid::parse_str(&id[5..]).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(id, id.to_lowercase());
        assert!(super::group_id().starts_with("group_"));
        assert!(super::chord_id().starts_with("chord_"));
    }
}
