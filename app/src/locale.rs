//! What the browser knows about its person's conventions, for the file options' suggestions.
//! On the server (while rendering the page) nothing is known, and nothing is suggested.

/// The browser's IANA time zone (`Europe/Paris`), if it tells.
pub fn browser_time_zone() -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        let format =
            js_sys::Intl::DateTimeFormat::new(&js_sys::Array::new(), &js_sys::Object::new());
        let options = format.resolved_options();
        js_sys::Reflect::get(&options, &"timeZone".into())
            .ok()
            .and_then(|zone| zone.as_string())
            .filter(|zone| !zone.is_empty())
    }
    #[cfg(not(feature = "hydrate"))]
    None
}

/// Whether the browser's language writes decimals with a comma (`1,5`): spreadsheets there
/// read `;` as the CSV delimiter, because `,` is taken by the numbers.
pub fn decimal_comma() -> bool {
    #[cfg(feature = "hydrate")]
    {
        let language = web_sys::window()
            .map(|w| w.navigator().language().unwrap_or_default())
            .unwrap_or_default();
        if language.is_empty() {
            // An empty locale is a RangeError in `toLocaleString`.
            return false;
        }
        let shown = js_sys::Number::from(1.5).to_locale_string(&language);
        String::from(shown).contains(',')
    }
    #[cfg(not(feature = "hydrate"))]
    false
}
