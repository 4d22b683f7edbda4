//! Generate: writes the report as a real PDF (A4, Helvetica) into the job's work directory.
//!
//! The table of regions breaks across pages when it is long; the header is repeated on each
//! page and every page carries a "Page i of n" footer. The token is checked between pages.

use std::ops::Range;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::transform::SalesSummary;
use super::{StageContext, StageError};

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const LEFT: f32 = 56.0;
const RIGHT: f32 = PAGE_WIDTH - 56.0;
const TITLE_Y: f32 = 786.0;
const BOTTOM: f32 = 72.0;
const ROW_HEIGHT: f32 = 16.0;
/// Where the table header sits on the first page (below the job details) and on the others.
const FIRST_TABLE_Y: f32 = 700.0;
const NEXT_TABLE_Y: f32 = 760.0;
/// Right edges of the number columns.
const ROWS_RIGHT: f32 = 300.0;
const TOTAL_RIGHT: f32 = 420.0;
const AVERAGE_RIGHT: f32 = RIGHT;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// What the PDF shows.
#[derive(Debug, Clone)]
pub struct ReportDocument<'a> {
    pub title: &'a str,
    pub job_id: &'a str,
    pub attempt: u32,
    /// The job's parameters, in the order to show them.
    pub params: &'a [(String, String)],
    pub summary: &'a SalesSummary,
    pub generated_at: SystemTime,
}

/// A rendered PDF.
#[derive(Debug, Clone)]
pub struct RenderedPdf {
    pub bytes: Vec<u8>,
    pub pages: usize,
}

/// Renders `doc`, calling `check` before each page (return `Err` to stop) and `progress`
/// after each page.
pub fn render_pdf(
    doc: &ReportDocument<'_>,
    check: impl Fn() -> Result<(), StageError>,
    progress: impl Fn(f64),
) -> Result<RenderedPdf, StageError> {
    let catalog_id = Ref::new(1);
    let tree_id = Ref::new(2);
    let regular_id = Ref::new(3);
    let bold_id = Ref::new(4);
    let info_id = Ref::new(5);
    let first_page_ref = 6;

    // One table line per region, then the totals line.
    let lines = doc.summary.regions.len() + 1;
    let pages = paginate(lines);
    let page_ids: Vec<Ref> = (0..pages.len())
        .map(|index| Ref::new(first_page_ref + 2 * index as i32))
        .collect();

    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(tree_id);
    pdf.pages(tree_id)
        .kids(page_ids.iter().copied())
        .count(pages.len() as i32);
    pdf.type1_font(regular_id).base_font(Name(b"Helvetica"));
    pdf.type1_font(bold_id).base_font(Name(b"Helvetica-Bold"));
    let title = printable(doc.title, 120);
    pdf.document_info(info_id)
        .title(TextStr(&title))
        .producer(TextStr("Presswork"));

    for (index, lines) in pages.iter().enumerate() {
        check()?;
        let page_id = page_ids[index];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT))
            .parent(tree_id)
            .contents(content_id);
        page.resources()
            .fonts()
            .pair(REGULAR, regular_id)
            .pair(BOLD, bold_id);
        page.finish();

        let content = page_content(doc, &title, index, pages.len(), lines.clone());
        pdf.stream(content_id, &content.finish());
        progress((index + 1) as f64 / pages.len() as f64);
    }
    Ok(RenderedPdf {
        bytes: pdf.finish(),
        pages: pages.len(),
    })
}

/// Splits `lines` table lines into pages: which lines go on each page (at least one page).
fn paginate(lines: usize) -> Vec<Range<usize>> {
    let fits = |table_y: f32| ((table_y - ROW_HEIGHT - BOTTOM) / ROW_HEIGHT) as usize + 1;
    let mut pages = Vec::new();
    let mut start = 0;
    let mut capacity = fits(FIRST_TABLE_Y);
    loop {
        let end = (start + capacity).min(lines);
        pages.push(start..end);
        if end >= lines {
            return pages;
        }
        start = end;
        capacity = fits(NEXT_TABLE_Y);
    }
}

fn page_content(
    doc: &ReportDocument<'_>,
    title: &str,
    index: usize,
    page_count: usize,
    lines: Range<usize>,
) -> Content {
    let mut content = Content::new();
    let summary = doc.summary;
    let table_y = if index == 0 {
        text(&mut content, BOLD, 18.0, LEFT, TITLE_Y, title);
        let details = [
            format!("Job {} (attempt {})", doc.job_id, doc.attempt),
            format!("Generated {}", format_utc(doc.generated_at)),
            format!("Parameters: {}", describe_params(doc.params)),
        ];
        for (line, detail) in details.iter().enumerate() {
            let y = TITLE_Y - 26.0 - ROW_HEIGHT * line as f32;
            text(
                &mut content,
                REGULAR,
                10.0,
                LEFT,
                y,
                &printable(detail, 100),
            );
        }
        FIRST_TABLE_Y
    } else {
        let continued = format!("{title} (continued)");
        text(&mut content, BOLD, 14.0, LEFT, TITLE_Y, &continued);
        NEXT_TABLE_Y
    };

    text(&mut content, BOLD, 10.0, LEFT, table_y, "Region");
    right_text(&mut content, BOLD, 10.0, ROWS_RIGHT, table_y, "Sales");
    right_text(&mut content, BOLD, 10.0, TOTAL_RIGHT, table_y, "Total");
    right_text(&mut content, BOLD, 10.0, AVERAGE_RIGHT, table_y, "Average");
    rule(&mut content, table_y - 4.0);

    for (row, line) in lines.enumerate() {
        let y = table_y - ROW_HEIGHT * (row as f32 + 1.0);
        let (font, label, rows, total, average) = match summary.regions.get(line) {
            Some(region) => (
                REGULAR,
                printable(&region.region, 40),
                region.rows,
                region.total,
                region.average(),
            ),
            None => {
                rule(&mut content, y + ROW_HEIGHT - 4.0);
                let average = if summary.rows == 0 {
                    0.0
                } else {
                    summary.total / summary.rows as f64
                };
                (
                    BOLD,
                    "Total".to_string(),
                    summary.rows,
                    summary.total,
                    average,
                )
            }
        };
        text(&mut content, font, 10.0, LEFT, y, &label);
        right_text(&mut content, font, 10.0, ROWS_RIGHT, y, &rows.to_string());
        right_text(&mut content, font, 10.0, TOTAL_RIGHT, y, &money(total));
        right_text(&mut content, font, 10.0, AVERAGE_RIGHT, y, &money(average));
    }

    let footer = format!("Page {} of {page_count}", index + 1);
    text(&mut content, REGULAR, 8.0, LEFT, 40.0, "Presswork");
    right_text(&mut content, REGULAR, 8.0, RIGHT, 40.0, &footer);
    content
}

fn text(content: &mut Content, font: Name<'_>, size: f32, x: f32, y: f32, value: &str) {
    content
        .begin_text()
        .set_font(font, size)
        .set_text_matrix([1.0, 0.0, 0.0, 1.0, x, y])
        .show(Str(value.as_bytes()))
        .end_text();
}

/// Text whose right edge is at `right` (widths of Helvetica's digits and punctuation).
fn right_text(content: &mut Content, font: Name<'_>, size: f32, right: f32, y: f32, value: &str) {
    let width: f32 = value
        .chars()
        .map(|c| match c {
            '.' | ',' | ' ' => 278.0,
            '-' => 333.0,
            'A'..='Z' => 667.0,
            _ => 556.0,
        })
        .sum();
    text(content, font, size, right - width * size / 1000.0, y, value);
}

fn rule(content: &mut Content, y: f32) {
    content
        .set_line_width(0.5)
        .move_to(LEFT, y)
        .line_to(RIGHT, y)
        .stroke();
}

/// Printable ASCII only (the base-14 fonts' encoding), at most `max` characters.
fn printable(value: &str, max: usize) -> String {
    let mut out: String = value
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect();
    if value.chars().count() > max {
        out.replace_range(out.len().saturating_sub(3).., "...");
    }
    out
}

fn describe_params(params: &[(String, String)]) -> String {
    if params.is_empty() {
        return "(none)".to_string();
    }
    params
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1234567.891` → `1,234,567.89`.
fn money(amount: f64) -> String {
    let fixed = format!("{:.2}", amount.abs());
    let (whole, cents) = fixed.split_once('.').unwrap_or((&fixed, "00"));
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if amount < 0.0 && fixed != "0.00" {
        "-"
    } else {
        ""
    };
    format!("{sign}{grouped}.{cents}")
}

/// `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, proleptic Gregorian calendar).
fn format_utc(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Renders the report into `report.pdf` in the job's work directory.
pub async fn run(ctx: &StageContext, doc: &ReportDocument<'_>) -> Result<PathBuf, StageError> {
    let rendered = render_pdf(doc, || ctx.check(), |fraction| ctx.progress(fraction))?;
    let path = ctx.work_dir().join("report.pdf");
    ctx.cancellable(tokio::fs::write(&path, &rendered.bytes))
        .await?
        .map_err(|e| {
            StageError::Failed(format!(
                "cannot write {}: {e}; check that --work-dir is writable and has free space",
                path.display()
            ))
        })?;
    ctx.log(format!(
        "wrote {}-page PDF ({} bytes)",
        rendered.pages,
        rendered.bytes.len()
    ));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::transform::RegionTotals;
    use std::time::Duration;

    fn summary(regions: usize) -> SalesSummary {
        let regions: Vec<RegionTotals> = (0..regions)
            .map(|i| RegionTotals {
                region: format!("Region {i:03}"),
                rows: 2,
                total: 1000.0 + i as f64,
            })
            .collect();
        SalesSummary {
            rows: regions.iter().map(|r| r.rows).sum(),
            total: regions.iter().map(|r| r.total).sum(),
            regions,
        }
    }

    fn render(regions: usize) -> RenderedPdf {
        let summary = summary(regions);
        let params = vec![("input".to_string(), "sales.csv".to_string())];
        let doc = ReportDocument {
            title: "Sales by region",
            job_id: "job-1",
            attempt: 1,
            params: &params,
            summary: &summary,
            generated_at: UNIX_EPOCH + Duration::from_secs(1_737_331_200),
        };
        render_pdf(&doc, || Ok(()), |_| {}).expect("renders")
    }

    /// Page objects: `/Type /Page` not followed by `s` (that is the page tree).
    fn count_pages(pdf: &[u8]) -> usize {
        let needle = b"/Type /Page";
        pdf.windows(needle.len() + 1)
            .filter(|w| &w[..needle.len()] == needle && w[needle.len()] != b's')
            .count()
    }

    #[test]
    fn a_short_table_fits_on_one_page() {
        let pdf = render(5);
        assert!(pdf.bytes.starts_with(b"%PDF-"));
        assert_eq!(pdf.pages, 1);
        assert_eq!(count_pages(&pdf.bytes), 1);
    }

    #[test]
    fn a_long_table_breaks_across_pages() {
        // 38 regions + the totals line fill the first page exactly; 120 need 3 pages.
        assert_eq!(count_pages(&render(38).bytes), 1);
        assert_eq!(count_pages(&render(39).bytes), 2);
        let pdf = render(120);
        assert_eq!(pdf.pages, 3);
        assert_eq!(count_pages(&pdf.bytes), 3);
        assert!(
            pdf.bytes
                .windows(b"(Page 3 of 3)".len())
                .any(|w| w == b"(Page 3 of 3)")
        );
    }

    #[test]
    fn stops_between_pages_when_asked() {
        let summary = summary(120);
        let doc = ReportDocument {
            title: "t",
            job_id: "job-1",
            attempt: 1,
            params: &[],
            summary: &summary,
            generated_at: UNIX_EPOCH,
        };
        let checks = std::cell::Cell::new(0);
        let result = render_pdf(
            &doc,
            || {
                checks.set(checks.get() + 1);
                if checks.get() == 2 {
                    Err(StageError::Cancelled)
                } else {
                    Ok(())
                }
            },
            |_| {},
        );
        assert!(matches!(result, Err(StageError::Cancelled)));
        assert_eq!(checks.get(), 2);
    }

    #[test]
    fn formats_money_dates_and_text() {
        assert_eq!(money(1_234_567.891), "1,234,567.89");
        assert_eq!(money(-12.5), "-12.50");
        assert_eq!(money(999.999), "1,000.00");
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(1_737_331_200 + 3661)),
            "2025-01-20 01:01:01 UTC"
        );
        assert_eq!(printable("Zürich", 10), "Z?rich");
        assert_eq!(printable("abcdefghij", 6), "abc...");
    }
}
