//! [`Kind`]: a closed set of named settings (scorer, recovery, GQA unit, …) with one string
//! per variant. The string is the variant's serde name, the one already written into cache
//! keys and summaries; `name`, parsing, `--help` and error messages all come from it, so a
//! setting cannot be spelled one way on the command line and another in a key.

use serde::ser::{self, Impossible, Serialize};
use std::fmt;

/// A closed set of named variants, named by serde.
pub trait Kind: Copy + Eq + Serialize + Send + Sync + 'static {
    /// What the set is, for messages ("scorer", "recovery").
    const WHAT: &'static str;
    /// Every variant, in the order `--help` lists them.
    const ALL: &'static [Self];

    /// One line for `--help`.
    fn help(self) -> &'static str;

    /// The variant's name: its serde name.
    fn name(self) -> &'static str {
        serde_name(&self)
    }

    /// The variant named `s`, or an error listing the names.
    fn parse(s: &str) -> Result<Self, UnknownName> {
        Self::ALL.iter().copied().find(|k| k.name() == s).ok_or_else(|| UnknownName {
            what: Self::WHAT,
            given: s.to_string(),
            names: Self::ALL.iter().map(|k| k.name()).collect(),
        })
    }
}

/// A name that is not one of a [`Kind`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    given: String,
    names: Vec<&'static str>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}` (expected one of {})", self.what, self.given, self.names.join(", "))
    }
}

impl std::error::Error for UnknownName {}

/// The serde name of a unit variant. Panics when `v` does not serialize as a unit variant:
/// [`Kind`] is implemented only for fieldless enums, which a test of each checks.
pub fn serde_name<T: Serialize>(v: &T) -> &'static str {
    v.serialize(NameOf).expect("a Kind is a fieldless enum")
}

/// A serializer that accepts only a unit variant and returns its name.
struct NameOf;

#[derive(Debug)]
struct NotAUnitVariant;

impl fmt::Display for NotAUnitVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a unit variant")
    }
}

impl std::error::Error for NotAUnitVariant {}

impl ser::Error for NotAUnitVariant {
    fn custom<M: fmt::Display>(_: M) -> Self {
        NotAUnitVariant
    }
}

macro_rules! refuse {
    ($($f:ident($($t:ty),*);)*) => {
        $(fn $f(self, $(_: $t),*) -> Result<&'static str, NotAUnitVariant> { Err(NotAUnitVariant) })*
    };
}

impl ser::Serializer for NameOf {
    type Ok = &'static str;
    type Error = NotAUnitVariant;
    type SerializeSeq = Impossible<&'static str, NotAUnitVariant>;
    type SerializeTuple = Impossible<&'static str, NotAUnitVariant>;
    type SerializeTupleStruct = Impossible<&'static str, NotAUnitVariant>;
    type SerializeTupleVariant = Impossible<&'static str, NotAUnitVariant>;
    type SerializeMap = Impossible<&'static str, NotAUnitVariant>;
    type SerializeStruct = Impossible<&'static str, NotAUnitVariant>;
    type SerializeStructVariant = Impossible<&'static str, NotAUnitVariant>;

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<&'static str, Self::Error> {
        Ok(variant)
    }

    refuse! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32); serialize_i64(i64);
        serialize_u8(u8); serialize_u16(u16); serialize_u32(u32); serialize_u64(u64); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_none(); serialize_unit(); serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<&'static str, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Err(NotAUnitVariant)
    }
}

/// Checks a [`Kind`]: every variant is listed once, has a name that parses back to it and
/// equals its JSON serialization, and has help. For each kind's test.
pub fn check_kind<K: Kind + fmt::Debug>() {
    let mut seen = Vec::new();
    for &k in K::ALL {
        assert!(!seen.contains(&k), "{k:?} listed twice in {}::ALL", K::WHAT);
        seen.push(k);
        assert_eq!(K::parse(k.name()), Ok(k));
        assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::from(k.name()));
        assert!(!k.help().is_empty(), "{k:?} has no help");
    }
    let err = K::parse("no-such-name").unwrap_err().to_string();
    assert!(err.contains(K::WHAT) && err.contains(K::ALL[0].name()), "{err}");
}

/// Implements [`Kind`] for a fieldless enum: `kinds!(GqaMode, "GQA unit" { PerGroup => "help", … })`.
/// The help is an exhaustive `match`, so a variant missing from the list does not compile.
#[macro_export]
macro_rules! kinds {
    ($ty:ident, $what:literal { $($v:ident => $help:literal),+ $(,)? }) => {
        impl $crate::Kind for $ty {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$($ty::$v),+];
            fn help(self) -> &'static str {
                match self {
                    $($ty::$v => $help),+
                }
            }
        }
    };
}
