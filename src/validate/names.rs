//! Kubernetes' rules for names, label keys and values, and resource quantities. Pure predicates.

/// A DNS-1123 label: namespaces, PersistentVolumeClaims, label-key names' prefixes' parts.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A DNS-1123 subdomain: Secrets, ConfigMaps, label-key prefixes.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A label value, or the name part of a label key (without its prefix).
pub fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

/// A label value: empty, or like a label name.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}

/// A key inside a Secret or ConfigMap.
pub fn is_data_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A positive quantity such as `500m`, `2` or `4Gi`, with one of `suffixes` (`""` for none).
pub fn is_quantity(raw: &str, suffixes: &[&str]) -> bool {
    let digits_end = raw.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(raw.len());
    let (number, suffix) = raw.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    number_ok && suffixes.contains(&suffix) && raw.len() <= 32
}

pub const CPU_SUFFIXES: &[&str] = &["", "m"];
pub const MEMORY_SUFFIXES: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_quantities() {
        assert!(is_dns_label("lm-eval-aas") && !is_dns_label("-x") && !is_dns_label("Upper") && !is_dns_label(""));
        assert!(is_dns_subdomain("llm.credentials") && !is_dns_subdomain("a..b"));
        assert!(
            is_label_key("team") && is_label_key("example.com/team") && !is_label_key("a b") && !is_label_key("/x")
        );
        assert!(is_label_value("") && is_label_value("nlp-1") && !is_label_value("-nlp"));
        assert!(is_data_key("token") && !is_data_key("a/b"));
        assert!(is_quantity("500m", CPU_SUFFIXES) && is_quantity("4Gi", MEMORY_SUFFIXES));
        assert!(
            !is_quantity("lots", MEMORY_SUFFIXES)
                && !is_quantity("0", CPU_SUFFIXES)
                && !is_quantity("1.", CPU_SUFFIXES)
        );
    }
}
