//! Text bounded by bytes: the longest prefix within a byte limit that ends between
//! characters (`str` slicing and `String::truncate` panic inside one).

/// The longest prefix of `text` of at most `max` bytes that does not split a character.
pub fn prefix_within(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    // std's `floor_char_boundary` does this from Rust 1.91; Sluice builds with 1.88.
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::prefix_within;

    #[test]
    fn a_prefix_ends_between_characters() {
        // "é" is two bytes: a cut at 4 would fall inside the second one.
        assert_eq!(prefix_within("aéé", 4), "aé");
        assert_eq!(prefix_within("aéé", 5), "aéé");
        assert_eq!(prefix_within("abc", 2), "ab");
        assert_eq!(prefix_within("é", 1), "");
    }
}
