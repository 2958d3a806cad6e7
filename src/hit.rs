//! Search results.

/// One result of a top-k search: a corpus row and its cosine similarity to the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Row of the corpus.
    pub index: usize,
    /// Cosine similarity in `[-1, 1]` (up to rounding); 0 against a zero vector.
    pub score: f32,
}

impl Hit {
    /// The result order: higher score first, and on equal scores the lower index first.
    #[inline]
    pub fn is_better_than(&self, other: &Hit) -> bool {
        self.score > other.score || (self.score == other.score && self.index < other.index)
    }
}
