//! A real TABLE_MAP event, for the tests of the modules that read one.

use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{FormatDescriptionEvent, TableMapEvent};
use mysql_common::binlog::BinlogCtx;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

/// The body of the TABLE_MAP event MariaDB 10.11 (`binlog_row_metadata=FULL`) wrote for
/// table `shop.m` (a column of every type; `CATALOG` in `tablemap`'s tests), checksum removed.
const EVENT: &str = "\
12000000000001000473686f7000016d00370301010202090903030808f6f6040504fefe0f0ffcfcfcfc0ffe0f0f\
0ffe0f0ffe0ffcfcfcfc0a131313121211110dfefefe101010fc013f0c04411e040804fe14cefc5000b004020103\
040a00fe0c030028002800fe040c001400fe030a000102030400060300060003f701f701f80101000401000804fa\
ffffffffff7d01032aa88003192d2d2d2d2d2d2d2d08210b3638233cfc2e043f3f3f3f3f3f2e04ba026964026938\
0275380369313603753136036932340375323403693332037533320369363403753634016404646d617801660167\
02666d0163046332353502766305766c6f6e670174027474026d74026c74026c3102753301610475313673057531\
366c65037563730475333273026e62016202766202746202626c026d62026c6202647402746d03746d3603746d33\
0364746d0464746d36027473037473330179016502656c0173036274310262740462743634016a026b380a032d01\
08050703016101620163061e0305736d616c6c066d656469756d056c617267650204636166e903782779080100";

/// The body of [`EVENT`].
pub(crate) fn table_map_event() -> Vec<u8> {
    hex(EVENT)
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// The event parsed as the binlog stream parses it.
pub(crate) fn with_event<T>(body: &[u8], f: impl FnOnce(&TableMapEvent<'_>) -> T) -> T {
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let ctx = BinlogCtx::new(body.len(), &fde, 0x13);
    let tme = TableMapEvent::deserialize(ctx, &mut ParseBuf(body)).expect("a TABLE_MAP event");
    f(&tme)
}
