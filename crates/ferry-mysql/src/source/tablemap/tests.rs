//! TABLE_MAP metadata into column types: a real event from MariaDB 10.11 read as the
//! catalog reads the same table, a property test that encodes random column definitions the
//! way the server writes them, and how a shape borrows from known columns.

use super::fixture::{table_map_event, with_event};
use super::*;
use ferry_core::{Dialect, LogicalType, ReplicaIdentity};
use proptest::prelude::*;

/// `information_schema.COLUMNS` of `shop.m` on the same server: name, `COLUMN_TYPE`,
/// character set, nullable.
const CATALOG: &[(&str, &str, Option<&str>, bool)] = &[
    ("id", "int(11)", None, false),
    ("i8", "tinyint(4)", None, true),
    ("u8", "tinyint(3) unsigned", None, false),
    ("i16", "smallint(6)", None, true),
    ("u16", "smallint(5) unsigned", None, true),
    ("i24", "mediumint(9)", None, true),
    ("u24", "mediumint(8) unsigned", None, true),
    ("i32", "int(5)", None, true),
    ("u32", "int(10) unsigned", None, true),
    ("i64", "bigint(20)", None, true),
    ("u64", "bigint(20) unsigned", None, true),
    ("d", "decimal(12,4)", None, true),
    ("dmax", "decimal(65,30) unsigned", None, true),
    ("f", "float", None, true),
    ("g", "double", None, true),
    ("fm", "float(7,3)", None, true),
    ("c", "char(5)", Some("utf8mb4"), true),
    ("c255", "char(255)", Some("utf8mb4"), true),
    ("vc", "varchar(20)", Some("utf8mb4"), true),
    ("vlong", "varchar(300)", Some("utf8mb4"), true),
    ("t", "text", Some("utf8mb4"), true),
    ("tt", "tinytext", Some("utf8mb4"), true),
    ("mt", "mediumtext", Some("utf8mb4"), true),
    ("lt", "longtext", Some("utf8mb4"), true),
    ("l1", "varchar(10)", Some("latin1"), true),
    ("u3", "char(4)", Some("utf8mb3"), true),
    ("a", "varchar(3)", Some("ascii"), true),
    ("u16s", "varchar(10)", Some("utf16"), true),
    ("u16le", "varchar(10)", Some("utf16le"), true),
    ("ucs", "char(2)", Some("ucs2"), true),
    ("u32s", "varchar(3)", Some("utf32"), true),
    ("nb", "varchar(5)", Some("utf8mb4"), true),
    ("b", "binary(3)", None, true),
    ("vb", "varbinary(10)", None, true),
    ("tb", "tinyblob", None, true),
    ("bl", "blob", None, true),
    ("mb", "mediumblob", None, true),
    ("lb", "longblob", None, true),
    ("dt", "date", None, true),
    ("tm", "time", None, true),
    ("tm6", "time(6)", None, true),
    ("tm3", "time(3)", None, true),
    ("dtm", "datetime", None, true),
    ("dtm6", "datetime(6)", None, true),
    ("ts", "timestamp", None, true),
    ("ts3", "timestamp(3)", None, true),
    ("y", "year(4)", None, true),
    ("e", "enum('small','medium','large')", Some("utf8mb4"), true),
    ("el", "enum('café','x''y')", Some("latin1"), true),
    ("s", "set('a','b','c')", Some("utf8mb4"), false),
    ("bt1", "bit(1)", None, true),
    ("bt", "bit(12)", None, true),
    ("bt64", "bit(64)", None, true),
    // MariaDB's JSON: a LONGTEXT with a json_valid check.
    ("j", "longtext", Some("utf8mb4"), true),
    ("k8", "tinyint(1)", None, true),
];

fn collation(charset: &str, max_len: u8) -> Collation {
    Collation {
        charset: charset.into(),
        max_len,
    }
}

/// The collations the event names (MariaDB's ids).
fn collations() -> Collations {
    let mut map = HashMap::new();
    for id in [45, 46, 1070] {
        map.insert(id, collation("utf8mb4", 4));
    }
    for (id, charset, max_len) in [
        (8, "latin1", 1),
        (33, "utf8mb3", 3),
        (11, "ascii", 1),
        (54, "utf16", 4),
        (56, "utf16le", 4),
        (35, "ucs2", 2),
        (60, "utf32", 4),
        (63, "binary", 1),
    ] {
        map.insert(id, collation(charset, max_len));
    }
    Collations(map)
}

fn catalog_shape() -> (TableSchema, Vec<Kind>) {
    let mut columns = Vec::new();
    let mut kinds = Vec::new();
    for (name, column_type, charset, nullable) in CATALOG {
        let (kind, logical) = types::classify(column_type, *charset, *name == "j").unwrap();
        kinds.push(kind);
        columns.push(ColumnSchema {
            name: name.to_string(),
            type_name: column_type.to_string(),
            type_oid: 0,
            logical,
            nullable: *nullable,
            missing_value: None,
            has_default: false,
        });
    }
    let schema = TableSchema {
        id: TableId::new("shop", "m"),
        columns,
        key: vec![0],
        identity: ReplicaIdentity::Full,
        user_types: Vec::new(),
        partition_of: Vec::new(),
        dialect: Dialect::Mysql,
    };
    (schema, kinds)
}

#[test]
fn a_real_table_map_reads_as_the_catalog_does() {
    let map = with_event(&table_map_event(), |tme| read(tme, &collations())).unwrap();
    assert_eq!(map.key, vec![0]);
    assert_eq!(map.columns.len(), CATALOG.len());
    for (column, (name, column_type, charset, nullable)) in map.columns.iter().zip(CATALOG) {
        assert_eq!(column.name, *name);
        assert_eq!(column.nullable, *nullable, "{name}");
        assert_eq!(column.charset.as_deref(), *charset, "{name}");
        assert_eq!(
            comparable_type(&column.column_type),
            comparable_type(column_type),
            "{name}"
        );
        assert_eq!(
            types::classify(&column.column_type, column.charset.as_deref(), false),
            types::classify(column_type, *charset, false),
            "{name}: {} against the catalog's {column_type}",
            column.column_type
        );
    }
    // Labels arrive in the column's character set (latin1 here) and read as text.
    assert_eq!(map.columns[48].column_type, "enum('café','x''y')");

    // With the catalog as the known shape, the shape is the catalog's exactly: same
    // definitions (`int(5)`, `float(7,3)`), JSON where the catalog says JSON.
    let (catalog, kinds) = catalog_shape();
    let (schema, read_kinds) = shape(map, &[(&catalog, &kinds)], &catalog).unwrap();
    assert_eq!(schema, catalog);
    assert_eq!(read_kinds, kinds);
    assert_eq!(read_kinds[53], Kind::Json);
}

#[test]
fn a_table_map_without_column_names_is_refused_with_the_setting() {
    // The same event without its optional metadata (binlog_row_metadata=MINIMAL).
    let body = table_map_event();
    let minimal_end = body
        .windows(4)
        .position(|w| w == [0x01, 0x03, 0x2a, 0xa8])
        .unwrap();
    let err = with_event(&body[..minimal_end], |tme| read(tme, &collations())).unwrap_err();
    assert!(err.to_string().contains("column names"), "{err}");
    assert!(
        format!("{err:?}").contains("binlog_row_metadata=FULL"),
        "{err:?}"
    );
}

#[test]
fn an_unknown_collation_is_refused_naming_the_column() {
    let mut few = collations();
    few.0.remove(&8);
    let err = with_event(&table_map_event(), |tme| read(tme, &few)).unwrap_err();
    assert!(err.to_string().contains("column l1 of shop.m"), "{err}");
}

fn map_column(name: &str, column_type: &str, charset: Option<&str>, nullable: bool) -> MapColumn {
    MapColumn {
        name: name.into(),
        column_type: column_type.into(),
        charset: charset.map(Into::into),
        nullable,
    }
}

#[test]
fn shapes_keep_known_definitions_and_follow_the_event_where_it_differs() {
    let (catalog, kinds) = catalog_shape();
    let map = TableMap {
        columns: vec![
            // Same type, another display width: the known definition.
            map_column("i32", "int(11)", None, false),
            // INT then, BIGINT now: the event's type.
            map_column("i64", "int(11)", None, true),
            // VARCHAR(20) then, shorter at this position.
            map_column("vc", "varchar(10)", Some("utf8mb4"), true),
            // Labels in another order: decoded with the event's.
            map_column("e", "enum('large','small')", Some("utf8mb4"), true),
            // JSON now: a LONGTEXT then is JSON.
            map_column("j", "longtext", Some("utf8mb4"), true),
            // Unknown to all: added and dropped while the stream was behind.
            map_column("gone", "int(11)", None, true),
            map_column("gone_nn", "varchar(3)", Some("latin1"), false),
        ],
        key: vec![0],
    };
    let (schema, kinds) = shape(map, &[(&catalog, &kinds)], &catalog).unwrap();
    let column = |i: usize| &schema.columns[i];
    assert_eq!(column(0).type_name, "int(5)");
    assert!(!column(0).nullable, "nullability is the event's");
    assert_eq!(column(1).type_name, "int(11)");
    assert_eq!(column(1).logical, LogicalType::Int { bits: 32 });
    assert_eq!(
        kinds[1],
        Kind::Int {
            signed: true,
            bytes: 4
        }
    );
    assert_eq!(column(2).type_name, "varchar(10)");
    assert_eq!(kinds[3], Kind::Enum(vec!["large".into(), "small".into()]));
    assert_eq!(kinds[4], Kind::Json);
    assert_eq!(column(4).logical, LogicalType::Json);
    assert_eq!(column(5).type_name, "int(11)");
    assert!(!column(5).has_default);
    assert!(
        column(6).has_default,
        "a NOT NULL column nothing knew had a value in rows that existed"
    );
    assert_eq!(schema.key, vec![0]);
}

#[test]
fn a_type_ferry_cannot_read_stops_naming_the_column() {
    let (catalog, kinds) = catalog_shape();
    let map = TableMap {
        columns: vec![map_column("t1", "time(1)", None, true)],
        key: Vec::new(),
    };
    let err = shape(map, &[(&catalog, &kinds)], &catalog).unwrap_err();
    assert!(err.to_string().contains("column t1 of shop.m"), "{err}");
    assert!(err.to_string().contains("TIME(1)"), "{err}");
    let geometry = Described {
        real: ColumnType::MYSQL_TYPE_GEOMETRY,
        meta: &[4],
        unsigned: false,
        collation: None,
        labels: &[],
    };
    assert!(column_type(&geometry).unwrap_err().0.contains("geometry"));
}

/// A column definition, as MariaDB prints it and as its binlog describes it.
#[derive(Clone, Debug)]
struct Definition {
    /// `COLUMN_TYPE`, with the display width a user may have chosen.
    column_type: String,
    charset: Option<&'static str>,
    real: ColumnType,
    meta: Vec<u8>,
    unsigned: bool,
    collation: Option<Collation>,
    labels: Vec<String>,
}

/// Character sets by name, bytes per character and whether Ferry decodes them.
const CHARSETS: &[(&str, u8)] = &[
    ("utf8mb4", 4),
    ("utf8mb3", 3),
    ("latin1", 1),
    ("ascii", 1),
    ("ucs2", 2),
    ("utf16", 4),
    ("utf16le", 4),
    ("utf32", 4),
    ("sjis", 2),
];

fn plain(column_type: String, real: ColumnType, meta: Vec<u8>, unsigned: bool) -> Definition {
    Definition {
        column_type,
        charset: None,
        real,
        meta,
        unsigned,
        collation: None,
        labels: Vec::new(),
    }
}

fn integers() -> impl Strategy<Value = Definition> {
    use ColumnType::*;
    let types = prop_oneof![
        Just(("tinyint", MYSQL_TYPE_TINY)),
        Just(("smallint", MYSQL_TYPE_SHORT)),
        Just(("mediumint", MYSQL_TYPE_INT24)),
        Just(("int", MYSQL_TYPE_LONG)),
        Just(("bigint", MYSQL_TYPE_LONGLONG)),
    ];
    (types, any::<bool>(), 1u8..=20, any::<bool>()).prop_map(
        |((name, real), unsigned, width, zerofill)| {
            let mut t = format!("{name}({width})");
            if unsigned || zerofill {
                t.push_str(" unsigned");
            }
            if zerofill {
                t.push_str(" zerofill");
            }
            plain(t, real, Vec::new(), unsigned || zerofill)
        },
    )
}

fn numbers() -> impl Strategy<Value = Definition> {
    use ColumnType::*;
    let decimal = (1u8..=65, 0u8..=30, any::<bool>()).prop_map(|(p, s, unsigned)| {
        let s = s.min(p);
        let sign = if unsigned { " unsigned" } else { "" };
        plain(
            format!("decimal({p},{s}){sign}"),
            MYSQL_TYPE_NEWDECIMAL,
            vec![p, s],
            unsigned,
        )
    });
    let float =
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(double, unsigned, sized)| {
            let (name, real, len) = if double {
                ("double", MYSQL_TYPE_DOUBLE, 8)
            } else {
                ("float", MYSQL_TYPE_FLOAT, 4)
            };
            let size = if sized { "(10,3)" } else { "" };
            let sign = if unsigned { " unsigned" } else { "" };
            plain(format!("{name}{size}{sign}"), real, vec![len], unsigned)
        });
    let bit = (1u32..=64).prop_map(|bits| {
        plain(
            format!("bit({bits})"),
            MYSQL_TYPE_BIT,
            vec![(bits % 8) as u8, (bits / 8) as u8],
            false,
        )
    });
    let year = Just(plain("year(4)".into(), MYSQL_TYPE_YEAR, Vec::new(), true));
    prop_oneof![decimal, float, bit, year]
}

fn temporals() -> impl Strategy<Value = Definition> {
    use ColumnType::*;
    let fractional = prop_oneof![
        Just(("time", MYSQL_TYPE_TIME2)),
        Just(("datetime", MYSQL_TYPE_DATETIME2)),
        Just(("timestamp", MYSQL_TYPE_TIMESTAMP2)),
    ];
    let date = Just(plain("date".into(), MYSQL_TYPE_DATE, Vec::new(), false));
    let with_fsp = (fractional, 0u8..=6).prop_map(|((name, real), fsp)| {
        let t = if fsp == 0 {
            name.to_string()
        } else {
            format!("{name}({fsp})")
        };
        plain(t, real, vec![fsp], false)
    });
    prop_oneof![date, with_fsp]
}

fn charset() -> impl Strategy<Value = (&'static str, u8, bool)> {
    // (name, bytes per character, binary)
    prop_oneof![
        4 => prop::sample::select(CHARSETS).prop_map(|(n, m)| (n, m, false)),
        1 => Just(("binary", 1, true)),
    ]
}

fn strings() -> impl Strategy<Value = Definition> {
    use ColumnType::*;
    let fixed = (charset(), 0usize..=255).prop_map(|((charset, max_len, binary), chars)| {
        let bytes = chars * usize::from(max_len);
        let name = if binary { "binary" } else { "char" };
        let meta = vec![0xfe ^ (((bytes & 0x300) >> 4) as u8), (bytes & 0xff) as u8];
        string(
            format!("{name}({chars})"),
            charset,
            max_len,
            binary,
            MYSQL_TYPE_STRING,
            meta,
        )
    });
    let varying = (charset(), 0usize..=16_383).prop_map(|((charset, max_len, binary), chars)| {
        let chars = chars.min(65_532 / usize::from(max_len));
        let bytes = (chars * usize::from(max_len)) as u16;
        let name = if binary { "varbinary" } else { "varchar" };
        let meta = bytes.to_le_bytes().to_vec();
        string(
            format!("{name}({chars})"),
            charset,
            max_len,
            binary,
            MYSQL_TYPE_VARCHAR,
            meta,
        )
    });
    let blob = (charset(), 1u8..=4).prop_map(|((charset, max_len, binary), size)| {
        let prefix = ["tiny", "", "medium", "long"][usize::from(size - 1)];
        let name = if binary { "blob" } else { "text" };
        string(
            format!("{prefix}{name}"),
            charset,
            max_len,
            binary,
            MYSQL_TYPE_BLOB,
            vec![size],
        )
    });
    prop_oneof![fixed, varying, blob]
}

fn string(
    column_type: String,
    charset: &'static str,
    max_len: u8,
    binary: bool,
    real: ColumnType,
    meta: Vec<u8>,
) -> Definition {
    Definition {
        column_type,
        charset: (!binary).then_some(charset),
        real,
        meta,
        unsigned: false,
        collation: Some(collation(charset, max_len)),
        labels: Vec::new(),
    }
}

fn labelled() -> impl Strategy<Value = Definition> {
    use ColumnType::*;
    let label = "[a-z',\\\\ é日]{0,6}";
    (any::<bool>(), prop::collection::vec(label, 1..6)).prop_map(|(set, labels)| {
        let quoted: Vec<String> = labels
            .iter()
            .map(|l| format!("'{}'", l.replace('\\', "\\\\").replace('\'', "''")))
            .collect();
        let (name, real) = if set {
            ("set", MYSQL_TYPE_SET)
        } else {
            ("enum", MYSQL_TYPE_ENUM)
        };
        Definition {
            column_type: format!("{name}({})", quoted.join(",")),
            charset: Some("utf8mb4"),
            real,
            meta: vec![real as u8, 1],
            unsigned: false,
            collation: Some(collation("utf8mb4", 4)),
            labels,
        }
    })
}

fn definitions() -> impl Strategy<Value = Definition> {
    prop_oneof![integers(), numbers(), temporals(), strings(), labelled()]
}

proptest! {
    /// Whatever the column, its binlog description reads as the kind and logical type the
    /// catalog's `COLUMN_TYPE` gives (refusals included), and as the same type.
    #[test]
    fn binlog_descriptions_read_as_the_catalog_does(d in definitions()) {
        let described = Described {
            real: d.real,
            meta: &d.meta,
            unsigned: d.unsigned,
            collation: d.collation.as_ref(),
            labels: &d.labels,
        };
        let (column_type, charset) = column_type(&described).unwrap();
        prop_assert_eq!(charset.as_deref(), d.charset);
        prop_assert_eq!(comparable_type(&column_type), comparable_type(&d.column_type));
        prop_assert_eq!(
            types::classify(&column_type, charset.as_deref(), false),
            types::classify(&d.column_type, d.charset, false)
        );
    }
}

#[test]
fn labels_decode_from_their_character_set() {
    assert_eq!(label_text(b"caf\xe9", "latin1").unwrap(), "café");
    assert_eq!(label_text("日".as_bytes(), "utf8mb4").unwrap(), "日");
    assert_eq!(label_text(&[0, b'a'], "ucs2").unwrap(), "a");
    // Sets Ferry does not decode still read ASCII labels, and name the others.
    assert_eq!(label_text(b"small", "sjis").unwrap(), "small");
    assert!(label_text(&[0x82, 0xa0], "sjis")
        .unwrap_err()
        .contains("sjis"));
}

#[test]
fn signedness_and_charsets_decide_the_kind() {
    let int = |unsigned| Described {
        real: ColumnType::MYSQL_TYPE_LONG,
        meta: &[],
        unsigned,
        collation: None,
        labels: &[],
    };
    let kind = |d: &Described<'_>| {
        let (t, charset) = column_type(d).unwrap();
        types::classify(&t, charset.as_deref(), false).unwrap()
    };
    assert_eq!(kind(&int(false)).1, LogicalType::Int { bits: 32 });
    assert_eq!(kind(&int(true)).1, LogicalType::Int { bits: 64 });
    let binary = collation("binary", 1);
    let latin1 = collation("latin1", 1);
    let varchar = |c| Described {
        real: ColumnType::MYSQL_TYPE_VARCHAR,
        meta: &[10, 0],
        unsigned: false,
        collation: Some(c),
        labels: &[],
    };
    assert_eq!(kind(&varchar(&binary)).0, Kind::Bytes);
    assert_eq!(
        kind(&varchar(&latin1)).0,
        Kind::Text {
            charset: Charset::Latin1
        }
    );
}
