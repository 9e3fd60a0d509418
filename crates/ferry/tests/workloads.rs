//! The fault suite's workloads without a fault: a bank whose total the target shows in every
//! consistent read while transfers stream, and TOASTed rows updated in other columns (the
//! target keeps the large values pgoutput does not resend).

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::workload::{bank, toast};

#[test]
fn bank_total_holds_on_the_target_and_toasted_values_survive_updates() {
    let pair = Pair::start();
    let bank = bank::Bank::create(&pair.source, "shop", 200);
    let docs = toast::ToastDocs::create(&pair.source, "shop", 50);
    pair.create("cf", &["public.bank_*", "public.toast_docs"]);
    pair.wait_synced("cf", Duration::from_secs(60));

    let checker = bank.start_checker(&pair.target, "analytics", "0/0", Duration::from_millis(250));
    let transfers = bank.start_writer(2, Duration::from_millis(2));
    let updates = docs.start_writer(2, Duration::from_millis(2));
    std::thread::sleep(Duration::from_secs(8));
    let (transfers, updates) = (transfers.stop(), updates.stop());
    pair.wait_synced("cf", Duration::from_secs(60));
    let checks = checker.stop();

    let mut tables = bank::TABLES.to_vec();
    tables.push(toast::TABLE);
    let report = pair.compare(&tables);
    let (toasted, rows) = toast::ToastDocs::toasted_rows(&pair.target, "analytics");
    eprintln!(
        "workloads: {} transfers, {} TOAST-row transactions; {checks}; target rows with both \
         large values out of line: {toasted} of {rows}\n{report}",
        transfers.committed, updates.committed
    );
    report.assert_identical();
    assert!(checks.violations.is_empty(), "{checks}");
    assert!(checks.held >= 10, "{checks}");
    assert!(transfers.committed > 100 && updates.committed > 100);
    assert_eq!(toasted, rows, "every target row keeps its large values");
    let source = toast::ToastDocs::toasted_rows(&pair.source, "shop");
    assert_eq!(source.0, source.1, "the source's values are TOASTed");
}
