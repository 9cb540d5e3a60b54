//! What a TPU VM costs: a small price table, always shown as an estimate
//! with its date and source, and the hours a VM has been up.
//!
//! Prices change (spot prices can change daily) and differ by region; the
//! authority is <https://cloud.google.com/tpu/pricing>. A type or region the
//! table lacks has no estimate rather than a guessed one.

use super::spec::Capacity;

/// Where the prices come from and when they were looked up.
pub const PRICE_SOURCE: &str = "SkyPilot's Google Cloud catalog (skypilot-org/skypilot-catalog, catalogs/v8/gcp/vms.csv, rows tpu-v3-8), \
generated from Google's Cloud Billing catalog, looked up 2026-11-28";
/// The date of the table, for the one-line note next to every estimate.
pub const PRICE_DATE: &str = "2026-11-28";

/// `(accelerator type, region, on-demand $/h, spot or preemptible $/h)`.
/// Spot and preemptible capacity are billed at the same rate.
const PRICES: &[(&str, &str, f64, Option<f64>)] = &[("v3-8", "us-central1", 8.00, Some(2.04)), ("v3-8", "europe-west4", 8.80, Some(2.24))];

/// The zones Google's TPU regions page lists for each type we have run
/// (<https://cloud.google.com/tpu/docs/regions-zones>, read 2026-12-01).
pub const ZONES: &[(&str, &[&str])] = &[("v3-8", &["us-central1-a", "us-central1-b", "europe-west4-a"])];

/// The region of a zone: `europe-west4-a` is in `europe-west4`.
pub fn region(zone: &str) -> &str {
    zone.rsplit_once('-').map(|(region, _)| region).unwrap_or(zone)
}

/// Dollars per hour for this type, zone and capacity, if the table has it.
pub fn hourly_usd(accelerator_type: &str, zone: &str, capacity: Capacity) -> Option<f64> {
    let region = region(zone);
    let (_, _, on_demand, spot) = PRICES.iter().find(|(t, r, _, _)| *t == accelerator_type && *r == region)?;
    match capacity {
        Capacity::OnDemand => Some(*on_demand),
        Capacity::Spot | Capacity::Preemptible => *spot,
    }
}

/// Every `(region, on-demand $/h, spot $/h)` the table has for this type.
pub fn prices(accelerator_type: &str) -> Vec<(&'static str, f64, Option<f64>)> {
    PRICES.iter().filter(|(t, _, _, _)| *t == accelerator_type).map(|(_, r, o, s)| (*r, *o, *s)).collect()
}

/// The estimate for `seconds` up, as text: `$12.34 (est.)`, or `-` without a price.
pub fn estimate(accelerator_type: &str, zone: &str, capacity: Capacity, seconds: f64) -> String {
    match hourly_usd(accelerator_type, zone, capacity) {
        Some(rate) => format!("${:.2} (est.)", rate * seconds.max(0.0) / 3600.0),
        None => "-".into(),
    }
}

/// The zones known to offer `accelerator_type`, for messages.
pub fn known_zones(accelerator_type: &str) -> Option<&'static [&'static str]> {
    ZONES.iter().find(|(t, _)| *t == accelerator_type).map(|(_, zones)| *zones)
}
