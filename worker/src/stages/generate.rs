//! Generate: writes the report as a real PDF (Helvetica, A4 or Letter) into the job's work
//! directory.
//!
//! [`render_table_pdf`] lays out any [`Table`]: a title, the job's details and parameters, and
//! the table, which breaks across pages with its header repeated on each, an optional totals
//! line at the end, and a "Page i of n" footer on every page. The token is checked between
//! pages. The built-in sales report ([`ReportDocument`]) is one such table.

use std::ops::Range;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::transform::SalesSummary;
use super::{StageContext, StageError};
use crate::table::{Table, Value};

const MARGIN: f32 = 56.0;
const BOTTOM: f32 = 72.0;
const ROW_HEIGHT: f32 = 16.0;
/// Space between the page's top and the title's baseline.
const TITLE_DROP: f32 = 56.0;
/// Where the table header sits below the title: lower on the first page (the job details).
const FIRST_TABLE_DROP: f32 = 142.0;
const NEXT_TABLE_DROP: f32 = 82.0;
/// The subtitle takes one more line on the first page.
const SUBTITLE_DROP: f32 = ROW_HEIGHT;
const FONT_SIZE: f32 = 10.0;
/// Helvetica's average glyph width, in text-space units per point of font size.
const AVERAGE_GLYPH: f32 = 0.55;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// The paper a report is printed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageSize {
    #[default]
    A4,
    Letter,
}

impl PageSize {
    /// From a configuration's `template.page_size` ("", "a4" or "letter").
    pub fn from_name(name: &str) -> Option<PageSize> {
        match name {
            "" | "a4" => Some(PageSize::A4),
            "letter" => Some(PageSize::Letter),
            _ => None,
        }
    }

    /// Width and height in points.
    fn size(self) -> (f32, f32) {
        match self {
            PageSize::A4 => (595.0, 842.0),
            PageSize::Letter => (612.0, 792.0),
        }
    }
}

/// What a table report's PDF shows.
#[derive(Debug, Clone)]
pub struct TableDocument<'a> {
    pub title: &'a str,
    /// A line under the title on the first page; may be empty.
    pub subtitle: &'a str,
    pub job_id: &'a str,
    pub attempt: u32,
    /// The job's parameters, in the order to show them.
    pub params: &'a [(String, String)],
    pub table: &'a Table,
    /// A last line in bold (e.g. `Table::totals`, with a label in its first column).
    pub totals: Option<Vec<Value>>,
    pub page_size: PageSize,
    pub generated_at: SystemTime,
}

/// The built-in sales report: sales by region.
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

impl ReportDocument<'_> {
    /// The summary as a table: region, sales, total, average, and a totals line.
    fn table(&self) -> (Table, Vec<Value>) {
        let summary = self.summary;
        let table = Table {
            columns: ["Region", "Sales", "Total", "Average"]
                .map(String::from)
                .to_vec(),
            rows: summary
                .regions
                .iter()
                .map(|r| {
                    vec![
                        Value::Text(r.region.clone()),
                        Value::Number(r.rows as f64),
                        Value::Number(r.total),
                        Value::Number(r.average()),
                    ]
                })
                .collect(),
            rows_read: summary.rows,
            rows_kept: summary.rows,
        };
        let average = if summary.rows == 0 {
            0.0
        } else {
            summary.total / summary.rows as f64
        };
        let totals = vec![
            Value::Text("Total".into()),
            Value::Number(summary.rows as f64),
            Value::Number(summary.total),
            Value::Number(average),
        ];
        (table, totals)
    }
}

/// A rendered PDF.
#[derive(Debug, Clone)]
pub struct RenderedPdf {
    pub bytes: Vec<u8>,
    pub pages: usize,
}

/// Renders the sales report `doc` (see [`render_table_pdf`]).
pub fn render_pdf(
    doc: &ReportDocument<'_>,
    check: impl Fn() -> Result<(), StageError>,
    progress: impl Fn(f64),
) -> Result<RenderedPdf, StageError> {
    let (table, totals) = doc.table();
    let table_doc = TableDocument {
        title: doc.title,
        subtitle: "",
        job_id: doc.job_id,
        attempt: doc.attempt,
        params: doc.params,
        table: &table,
        totals: Some(totals),
        page_size: PageSize::A4,
        generated_at: doc.generated_at,
    };
    render_table_pdf(&table_doc, check, progress)
}

/// Where things go on a page of one document.
struct Layout {
    width: f32,
    height: f32,
    /// Left edge of each column, and the right edge of the last.
    edges: Vec<f32>,
    /// Right-aligned (every value a number or empty).
    numeric: Vec<bool>,
    /// Characters that fit in each column.
    fits: Vec<usize>,
}

impl Layout {
    fn new(doc: &TableDocument<'_>) -> Layout {
        let (width, height) = doc.page_size.size();
        let columns = doc.table.columns.len().max(1);
        let step = (width - 2.0 * MARGIN) / columns as f32;
        let edges = (0..=columns).map(|i| MARGIN + step * i as f32).collect();
        let numeric = (0..columns)
            .map(|i| {
                let mut any = false;
                for row in &doc.table.rows {
                    match row.get(i) {
                        Some(Value::Number(_)) => any = true,
                        Some(Value::Text(_)) => return false,
                        _ => {}
                    }
                }
                any
            })
            .collect();
        let fits = vec![((step - 6.0) / (FONT_SIZE * AVERAGE_GLYPH)).max(3.0) as usize; columns];
        Layout {
            width,
            height,
            edges,
            numeric,
            fits,
        }
    }

    fn title_y(&self) -> f32 {
        self.height - TITLE_DROP
    }

    fn table_y(&self, first: bool, subtitle: bool) -> f32 {
        if first {
            self.height - FIRST_TABLE_DROP - if subtitle { SUBTITLE_DROP } else { 0.0 }
        } else {
            self.height - NEXT_TABLE_DROP
        }
    }

    /// How many table lines fit below a header at `table_y`.
    fn lines_below(&self, table_y: f32) -> usize {
        (((table_y - ROW_HEIGHT - BOTTOM) / ROW_HEIGHT) as usize + 1).max(1)
    }
}

/// Renders `doc`, calling `check` before each page (return `Err` to stop) and `progress`
/// after each page.
pub fn render_table_pdf(
    doc: &TableDocument<'_>,
    check: impl Fn() -> Result<(), StageError>,
    progress: impl Fn(f64),
) -> Result<RenderedPdf, StageError> {
    let catalog_id = Ref::new(1);
    let tree_id = Ref::new(2);
    let regular_id = Ref::new(3);
    let bold_id = Ref::new(4);
    let info_id = Ref::new(5);
    let first_page_ref = 6;

    let layout = Layout::new(doc);
    let lines = doc.table.rows.len() + usize::from(doc.totals.is_some());
    let pages = paginate(&layout, !doc.subtitle.is_empty(), lines);
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
        page.media_box(Rect::new(0.0, 0.0, layout.width, layout.height))
            .parent(tree_id)
            .contents(content_id);
        page.resources()
            .fonts()
            .pair(REGULAR, regular_id)
            .pair(BOLD, bold_id);
        page.finish();

        let content = page_content(doc, &layout, &title, index, pages.len(), lines.clone());
        pdf.stream(content_id, &content.finish());
        progress((index + 1) as f64 / pages.len() as f64);
    }
    Ok(RenderedPdf {
        bytes: pdf.finish(),
        pages: pages.len(),
    })
}

/// Splits `lines` table lines into pages: which lines go on each page (at least one page).
fn paginate(layout: &Layout, subtitle: bool, lines: usize) -> Vec<Range<usize>> {
    let mut pages = Vec::new();
    let mut start = 0;
    let mut capacity = layout.lines_below(layout.table_y(true, subtitle));
    loop {
        let end = (start + capacity).min(lines);
        pages.push(start..end);
        if end >= lines {
            return pages;
        }
        start = end;
        capacity = layout.lines_below(layout.table_y(false, subtitle));
    }
}

/// A cell as printed: numbers grouped by thousands (two decimals unless whole).
fn cell(value: &Value, fits: usize) -> String {
    match value {
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => grouped(*n, 0),
        Value::Number(n) => grouped(*n, 2),
        other => printable(&other.display(), fits),
    }
}

fn page_content(
    doc: &TableDocument<'_>,
    layout: &Layout,
    title: &str,
    index: usize,
    page_count: usize,
    lines: Range<usize>,
) -> Content {
    let mut content = Content::new();
    let left = MARGIN;
    let right = layout.width - MARGIN;
    let subtitle = !doc.subtitle.is_empty();
    let table_y = layout.table_y(index == 0, subtitle);
    if index == 0 {
        text(&mut content, BOLD, 18.0, left, layout.title_y(), title);
        let mut details = Vec::new();
        if subtitle {
            details.push(doc.subtitle.to_string());
        }
        details.push(format!("Job {} (attempt {})", doc.job_id, doc.attempt));
        details.push(format!("Generated {}", format_utc(doc.generated_at)));
        details.push(format!("Parameters: {}", describe_params(doc.params)));
        for (line, detail) in details.iter().enumerate() {
            let y = layout.title_y() - 26.0 - ROW_HEIGHT * line as f32;
            text(
                &mut content,
                REGULAR,
                10.0,
                left,
                y,
                &printable(detail, 100),
            );
        }
    } else {
        let continued = format!("{title} (continued)");
        text(&mut content, BOLD, 14.0, left, layout.title_y(), &continued);
    }

    let put = |content: &mut Content, font: Name<'_>, column: usize, y: f32, value: &str| {
        if layout.numeric[column] {
            right_text(
                content,
                font,
                FONT_SIZE,
                layout.edges[column + 1] - 6.0,
                y,
                value,
            );
        } else {
            text(content, font, FONT_SIZE, layout.edges[column], y, value);
        }
    };
    for (column, name) in doc.table.columns.iter().enumerate() {
        put(
            &mut content,
            BOLD,
            column,
            table_y,
            &printable(name, layout.fits[column]),
        );
    }
    rule(&mut content, left, right, table_y - 4.0);

    for (row, line) in lines.enumerate() {
        let y = table_y - ROW_HEIGHT * (row as f32 + 1.0);
        let (font, values) = match doc.table.rows.get(line) {
            Some(values) => (REGULAR, values),
            None => {
                rule(&mut content, left, right, y + ROW_HEIGHT - 4.0);
                (
                    BOLD,
                    doc.totals
                        .as_ref()
                        .expect("the line after the rows is the totals"),
                )
            }
        };
        for (column, value) in values.iter().enumerate().take(doc.table.columns.len()) {
            put(
                &mut content,
                font,
                column,
                y,
                &cell(value, layout.fits[column]),
            );
        }
    }

    let footer = format!("Page {} of {page_count}", index + 1);
    text(&mut content, REGULAR, 8.0, left, 40.0, "Presswork");
    right_text(&mut content, REGULAR, 8.0, right, 40.0, &footer);
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

fn rule(content: &mut Content, left: f32, right: f32, y: f32) {
    content
        .set_line_width(0.5)
        .move_to(left, y)
        .line_to(right, y)
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

/// `1234567.891` → `1,234,567.89` (with 2 decimals), `-1234` → `-1,234` (with 0).
fn grouped(amount: f64, decimals: usize) -> String {
    let fixed = format!("{:.*}", decimals, amount.abs());
    let (whole, fraction) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let mut out = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    let zero = fixed.chars().all(|c| c == '0' || c == '.');
    if amount < 0.0 && !zero {
        out.insert(0, '-');
    }
    out
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
    write(ctx, rendered).await
}

/// Renders a configured report's table into `report.pdf` in the job's work directory.
pub async fn run_table(ctx: &StageContext, doc: &TableDocument<'_>) -> Result<PathBuf, StageError> {
    let rendered = render_table_pdf(doc, || ctx.check(), |fraction| ctx.progress(fraction))?;
    write(ctx, rendered).await
}

/// The totals line of `table`: the sums of its numeric columns, with "Total" in the first
/// column when that column holds text.
pub fn labelled_totals(table: &Table) -> Vec<Value> {
    let mut totals = table.totals();
    let first_is_text = table
        .rows
        .iter()
        .any(|row| matches!(row.first(), Some(Value::Text(_))));
    if let Some(first) = totals.first_mut()
        && (first_is_text || *first == Value::Null)
    {
        *first = Value::Text("Total".into());
    }
    totals
}

async fn write(ctx: &StageContext, rendered: RenderedPdf) -> Result<PathBuf, StageError> {
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

    fn table(rows: usize) -> Table {
        Table {
            columns: vec!["region".into(), "product".into(), "total".into()],
            rows: (0..rows)
                .map(|i| {
                    vec![
                        Value::Text(format!("region-{i:03}")),
                        if i % 7 == 0 {
                            Value::Null
                        } else {
                            Value::Text("pens".into())
                        },
                        Value::Number(1000.0 + i as f64 / 4.0),
                    ]
                })
                .collect(),
            rows_read: rows as u64,
            rows_kept: rows as u64,
        }
    }

    /// The PDF read back: its pages' text, and the first page's size.
    fn read_back(bytes: &[u8]) -> (Vec<String>, (f32, f32)) {
        let document = lopdf::Document::load_mem(bytes).expect("a PDF lopdf can read");
        let pages = document.get_pages();
        let texts = pages
            .keys()
            .map(|n| document.extract_text(&[*n]).expect("page text"))
            .collect();
        let first = document
            .get_object(*pages.values().next().unwrap())
            .unwrap();
        let media = first
            .as_dict()
            .unwrap()
            .get(b"MediaBox")
            .unwrap()
            .as_array()
            .unwrap();
        let number = |o: &lopdf::Object| {
            o.as_float()
                .or_else(|_| o.as_i64().map(|i| i as f32))
                .unwrap()
        };
        (texts, (number(&media[2]), number(&media[3])))
    }

    #[test]
    fn any_table_breaks_across_pages_with_its_header_repeated() {
        let table = table(100);
        let doc = TableDocument {
            title: "Pens by region",
            subtitle: "Only pens, by region",
            job_id: "job-7",
            attempt: 2,
            params: &[("month".to_string(), "2026-10".to_string())],
            table: &table,
            totals: Some(vec![
                Value::Text("Total".into()),
                Value::Null,
                Value::Number(112_375.0),
            ]),
            page_size: PageSize::Letter,
            generated_at: UNIX_EPOCH + Duration::from_secs(1_737_331_200),
        };
        let pdf = render_table_pdf(&doc, || Ok(()), |_| {}).expect("renders");
        let (pages, size) = read_back(&pdf.bytes);
        assert_eq!(size, (612.0, 792.0), "Letter");
        assert_eq!(pages.len(), pdf.pages);
        assert_eq!(pages.len(), 3, "100 rows and the totals on Letter");
        let first = &pages[0];
        for expected in [
            "Pens by region",
            "Only pens, by region",
            "Job job-7 (attempt 2)",
            "month=2026-10",
            "2025-01-20",
            "region-000",
            "1,000",
            "Page 1 of 3",
        ] {
            assert!(
                first.contains(expected),
                "page 1 lacks {expected:?}: {first}"
            );
        }
        for (i, page) in pages.iter().enumerate().skip(1) {
            assert!(
                page.contains("Pens by region (continued)"),
                "page {}: {page}",
                i + 1
            );
            for header in ["region", "product", "total"] {
                assert!(
                    page.contains(header),
                    "page {} repeats the header {header:?}",
                    i + 1
                );
            }
        }
        let last = pages.last().unwrap();
        assert!(
            last.contains("region-099") && last.contains("1,024.75"),
            "{last}"
        );
        assert!(
            last.contains("Total") && last.contains("112,375") && last.contains("Page 3 of 3"),
            "{last}"
        );
        let all: String = pages.concat();
        assert_eq!(all.matches("region-").count(), 100, "every row once");
    }

    #[test]
    fn the_sales_report_reads_back() {
        let pdf = render(45);
        let (pages, size) = read_back(&pdf.bytes);
        assert_eq!(size, (595.0, 842.0), "A4");
        assert_eq!(pages.len(), 2);
        assert!(pages[0].contains("Sales by region") && pages[0].contains("Region 000"));
        assert!(pages[1].contains("Total") && pages[1].contains("Average"));
    }

    #[test]
    fn formats_money_dates_and_text() {
        assert_eq!(grouped(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(grouped(-12.5, 2), "-12.50");
        assert_eq!(grouped(999.999, 2), "1,000.00");
        assert_eq!(grouped(-1234.0, 0), "-1,234");
        assert_eq!(grouped(-0.001, 2), "0.00");
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(1_737_331_200 + 3661)),
            "2025-01-20 01:01:01 UTC"
        );
        assert_eq!(printable("Zürich", 10), "Z?rich");
        assert_eq!(printable("abcdefghij", 6), "abc...");
    }
}
