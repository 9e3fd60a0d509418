//! What a binlog QUERY event does to tables, as far as a change stream cares: empties
//! them (`TRUNCATE`), renames them (`RENAME TABLE`, `ALTER TABLE … RENAME`), drops them
//! (`DROP TABLE`), creates them (`CREATE [OR REPLACE] TABLE`: a dropped one again), or
//! changes their columns (any other `ALTER TABLE`). Anything else (grants, views) the
//! stream ignores.
//!
//! A small tokenizer, not a SQL parser: it reads the statement's head, skipping comments,
//! and resolves unqualified names in the event's default database.

use ferry_core::TableId;

/// A statement's effect on tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ddl {
    /// `TRUNCATE TABLE t`.
    Truncate(TableId),
    /// Renames, in order.
    Rename(Vec<(TableId, TableId)>),
    /// `ALTER TABLE t …` that keeps the name: its columns may have changed.
    Alter(TableId),
    /// `DROP TABLE t, …` (not of temporary tables).
    Drop(Vec<TableId>),
    /// `CREATE [OR REPLACE] TABLE t …` (not temporary); `replace` drops a table `t` first.
    Create { table: TableId, replace: bool },
    /// `DROP {DATABASE | SCHEMA} d`: every table of `d` is dropped.
    DropDatabase(String),
    /// Nothing a stream follows.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A bare word (keyword or identifier), as written.
    Word(String),
    /// A `` `quoted` `` identifier.
    Quoted(String),
    /// Any other character.
    Punct(char),
}

/// How the session that ran a statement reads quotes: its `sql_mode`, which the binlog
/// records with the statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quoting {
    /// A backslash escapes the next character in a string (unless `NO_BACKSLASH_ESCAPES`).
    pub(crate) backslash_escapes: bool,
    /// `"…"` is an identifier, not a string (`ANSI_QUOTES`).
    pub(crate) ansi_quotes: bool,
}

impl Default for Quoting {
    fn default() -> Self {
        Quoting {
            backslash_escapes: true,
            ansi_quotes: false,
        }
    }
}

impl Quoting {
    /// The quoting of the session that ran `query` (the server's default when the event
    /// does not say).
    pub(crate) fn of(query: &mysql_common::binlog::events::QueryEvent<'_>) -> Quoting {
        use mysql_common::binlog::consts::StatusVarKey;
        use mysql_common::binlog::events::StatusVarVal;
        use mysql_common::constants::SqlMode;
        let mode = query
            .status_vars()
            .get_status_var(StatusVarKey::SqlMode)
            .and_then(|var| match var.get_value() {
                Ok(StatusVarVal::SqlMode(mode)) => Some(mode.get()),
                _ => None,
            });
        match mode {
            Some(mode) => Quoting {
                backslash_escapes: !mode.contains(SqlMode::MODE_NO_BACKSLASH_ESCAPES),
                ansi_quotes: mode.contains(SqlMode::MODE_ANSI_QUOTES),
            },
            None => Quoting::default(),
        }
    }
}

fn tokens(sql: &str, quoting: Quoting) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            // A `quoted` identifier, or "…" under ANSI_QUOTES; else a string, one token, so
            // that words inside it (`COMMENT 'rename to b'`) are never read as SQL.
            quote @ ('`' | '"' | '\'') => {
                let identifier = quote == '`' || (quote == '"' && quoting.ansi_quotes);
                let escapes = !identifier && quoting.backslash_escapes;
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    if c == '\\' && escapes {
                        if let Some(escaped) = chars.next() {
                            text.push(escaped);
                        }
                    } else if c == quote {
                        if chars.peek() == Some(&quote) {
                            chars.next();
                            text.push(quote);
                        } else {
                            break;
                        }
                    } else {
                        text.push(c);
                    }
                }
                out.push(if identifier {
                    Token::Quoted(text)
                } else {
                    Token::Punct(quote)
                });
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word(word));
            }
            c => out.push(Token::Punct(c)),
        }
    }
    out
}

struct Cursor<'a> {
    tokens: &'a [Token],
    at: usize,
    database: &'a str,
}

impl Cursor<'_> {
    fn keyword(&mut self, word: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn ident(&mut self) -> Option<String> {
        let name = match self.tokens.get(self.at)? {
            Token::Word(w) | Token::Quoted(w) => w.clone(),
            Token::Punct(_) => return None,
        };
        self.at += 1;
        Some(name)
    }

    fn punct(&mut self, p: char) -> bool {
        if self.tokens.get(self.at) == Some(&Token::Punct(p)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// `[WAIT n | NOWAIT]` after a table name.
    fn lock_wait(&mut self) {
        if self.keyword("WAIT") {
            self.ident();
        } else {
            self.keyword("NOWAIT");
        }
    }

    /// `name` or `db.name`, unqualified names in the event's database.
    fn table(&mut self) -> Option<TableId> {
        let first = self.ident()?;
        if self.punct('.') {
            Some(TableId::new(first, self.ident()?))
        } else {
            Some(TableId::new(self.database, first))
        }
    }
}

/// What `sql`, run with default database `database` and `quoting`, does to tables.
pub(crate) fn classify(sql: &str, database: &str, quoting: Quoting) -> Ddl {
    let tokens = tokens(sql, quoting);
    let mut c = Cursor {
        tokens: &tokens,
        at: 0,
        database,
    };
    if c.keyword("TRUNCATE") {
        c.keyword("TABLE");
        return c.table().map_or(Ddl::Other, Ddl::Truncate);
    }
    if c.keyword("RENAME") {
        if !(c.keyword("TABLE") || c.keyword("TABLES")) {
            return Ddl::Other;
        }
        if c.keyword("IF") {
            c.keyword("EXISTS");
        }
        let mut renames = Vec::new();
        loop {
            let from = c.table();
            c.lock_wait();
            let (Some(from), true, Some(to)) = (from, c.keyword("TO"), c.table()) else {
                return Ddl::Other;
            };
            renames.push((from, to));
            if !c.punct(',') {
                break;
            }
        }
        return Ddl::Rename(renames);
    }
    if c.keyword("ALTER") {
        c.keyword("ONLINE");
        c.keyword("IGNORE");
        if !c.keyword("TABLE") {
            return Ddl::Other;
        }
        if c.keyword("IF") {
            c.keyword("EXISTS");
        }
        let Some(table) = c.table() else {
            return Ddl::Other;
        };
        c.lock_wait();
        // A top-level `RENAME [TO|AS] new` (not RENAME COLUMN/INDEX/KEY).
        while c.at < tokens.len() {
            if c.keyword("RENAME") {
                if c.keyword("COLUMN") || c.keyword("INDEX") || c.keyword("KEY") {
                    continue;
                }
                let _ = c.keyword("TO") || c.keyword("AS");
                if let Some(to) = c.table() {
                    return Ddl::Rename(vec![(table, to)]);
                }
            } else {
                c.at += 1;
            }
        }
        return Ddl::Alter(table);
    }
    if c.keyword("CREATE") {
        let replace = c.keyword("OR") && c.keyword("REPLACE");
        if !c.keyword("TABLE") {
            return Ddl::Other;
        }
        if c.keyword("IF") {
            c.keyword("NOT");
            c.keyword("EXISTS");
        }
        return c
            .table()
            .map_or(Ddl::Other, |table| Ddl::Create { table, replace });
    }
    if c.keyword("DROP") {
        if c.keyword("DATABASE") || c.keyword("SCHEMA") {
            if c.keyword("IF") {
                c.keyword("EXISTS");
            }
            return c.ident().map_or(Ddl::Other, Ddl::DropDatabase);
        }
        if !c.keyword("TABLE") {
            // DROP TEMPORARY TABLE, DROP VIEW …
            return Ddl::Other;
        }
        if c.keyword("IF") {
            c.keyword("EXISTS");
        }
        let mut tables = Vec::new();
        loop {
            let Some(table) = c.table() else {
                return Ddl::Other;
            };
            tables.push(table);
            if !c.punct(',') {
                break;
            }
        }
        return Ddl::Drop(tables);
    }
    Ddl::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, n: &str) -> TableId {
        TableId::new(s, n)
    }

    fn classify(sql: &str, database: &str) -> Ddl {
        super::classify(sql, database, Quoting::default())
    }

    #[test]
    fn statements_that_touch_tables() {
        assert_eq!(
            classify("/* x */ truncate table `a b`", "shop"),
            Ddl::Truncate(t("shop", "a b"))
        );
        assert_eq!(classify("TRUNCATE o.x", "shop"), Ddl::Truncate(t("o", "x")));
        assert_eq!(
            classify("RENAME TABLE a TO b, shop.c TO other.d", "shop"),
            Ddl::Rename(vec![
                (t("shop", "a"), t("shop", "b")),
                (t("shop", "c"), t("other", "d"))
            ])
        );
        assert_eq!(
            classify("ALTER TABLE a ADD COLUMN x int, RENAME TO b", "shop"),
            Ddl::Rename(vec![(t("shop", "a"), t("shop", "b"))])
        );
        assert_eq!(
            classify("alter table a rename column x to y", "shop"),
            Ddl::Alter(t("shop", "a"))
        );
        assert_eq!(
            classify("ALTER TABLE `s`.`a` DROP c", ""),
            Ddl::Alter(t("s", "a"))
        );
        assert_eq!(
            classify(
                "RENAME TABLE IF EXISTS a WAIT 3 TO b, c NOWAIT TO d",
                "shop"
            ),
            Ddl::Rename(vec![
                (t("shop", "a"), t("shop", "b")),
                (t("shop", "c"), t("shop", "d"))
            ])
        );
        assert_eq!(
            classify("ALTER TABLE a NOWAIT RENAME TO b", "shop"),
            Ddl::Rename(vec![(t("shop", "a"), t("shop", "b"))])
        );
        assert_eq!(
            classify(
                "DROP TABLE IF EXISTS `a`,`o`.`b` /* generated by server */",
                "shop"
            ),
            Ddl::Drop(vec![t("shop", "a"), t("o", "b")])
        );
        assert_eq!(
            classify("drop table a wait 5 cascade", "shop"),
            Ddl::Drop(vec![t("shop", "a")])
        );
        assert_eq!(classify("DROP TEMPORARY TABLE a", "shop"), Ddl::Other);
        // Words inside strings are not SQL; "…" names a table under ANSI_QUOTES.
        assert_eq!(
            classify("ALTER TABLE a COMMENT 'it''s a \\' rename to b'", "shop"),
            Ddl::Alter(t("shop", "a"))
        );
        assert_eq!(
            classify("ALTER TABLE a COMMENT \"rename to b\"", "shop"),
            Ddl::Alter(t("shop", "a"))
        );
        let ansi = Quoting {
            ansi_quotes: true,
            ..Quoting::default()
        };
        assert_eq!(
            super::classify(r#"RENAME TABLE "shop"."a" TO "b""c\d""#, "x", ansi),
            Ddl::Rename(vec![(t("shop", "a"), t("x", "b\"c\\d"))])
        );
        // Without ANSI_QUOTES "…" is a string: no table.
        assert_eq!(classify(r#"RENAME TABLE "a" TO "b""#, "x"), Ddl::Other);
        // Under NO_BACKSLASH_ESCAPES a backslash ends nothing: the RENAME after is read.
        let literal = Quoting {
            backslash_escapes: false,
            ..Quoting::default()
        };
        let sql = r"ALTER TABLE a COMMENT 'C:\', RENAME TO b";
        assert_eq!(
            super::classify(sql, "shop", literal),
            Ddl::Rename(vec![(t("shop", "a"), t("shop", "b"))])
        );
        assert_eq!(classify(sql, "shop"), Ddl::Alter(t("shop", "a")));
        assert_eq!(
            classify("DROP DATABASE shop", "x"),
            Ddl::DropDatabase("shop".into())
        );
        assert_eq!(
            classify("drop schema if exists `my shop`", "x"),
            Ddl::DropDatabase("my shop".into())
        );
        let create = |table, replace| Ddl::Create { table, replace };
        assert_eq!(
            classify("CREATE TABLE a (x int)", "shop"),
            create(t("shop", "a"), false)
        );
        assert_eq!(
            classify("create or replace table if not exists o.b like a", "shop"),
            create(t("o", "b"), true)
        );
        assert_eq!(
            classify("CREATE TEMPORARY TABLE a (x int)", "shop"),
            Ddl::Other
        );
        assert_eq!(classify("CREATE VIEW a AS SELECT 1", "shop"), Ddl::Other);
        assert_eq!(classify("BEGIN", "shop"), Ddl::Other);
    }
}
