//! Credentials: which one this browser holds, where it came from, and which one a request sends.
//!
//! An operator opens the app with `#key=KEY` (an API key: every user, and the user picker); a user
//! with `#token=TOKEN` (a user token: that one user's feed and events). The credential is saved on
//! the device and the fragment leaves the address bar, so the link is not bookmarked or shared by
//! accident; later visits use the saved one. Without any, the app shows the anonymous feed.

use onerec_core::api::UserToken;

use crate::store;

/// What the saved credential lets this browser do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credential: the anonymous cold-start feed only.
    Anonymous,
    /// An API key: any user, picked in the app.
    Operator,
    /// A user token: this user's feed and events, and no other user's.
    User(String),
}

impl Access {
    pub fn current() -> Access {
        match store::load_credential() {
            None => Access::Anonymous,
            Some(credential) => match UserToken::user_of(&credential) {
                Some(user) => Access::User(user),
                None => Access::Operator,
            },
        }
    }
}

/// Takes a `#key=` or `#token=` credential from the address, saves it and removes the fragment
/// from the address bar. True when one was taken. A token whose user cannot be read is refused
/// (the app could not tell whose feed it opens), but leaves the address all the same.
pub fn adopt_from_address() -> bool {
    let Some(window) = web_sys::window() else { return false };
    let location = window.location();
    let hash = location.hash().unwrap_or_default();
    let Some((kind, value)) = hash.strip_prefix('#').and_then(|h| h.split_once('=')) else { return false };
    if kind != "key" && kind != "token" {
        return false;
    }
    let address = format!("{}{}", location.pathname().unwrap_or_default(), location.search().unwrap_or_default());
    if let Ok(history) = window.history() {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&address));
    }
    let credential = js_sys::decode_uri_component(value).map(String::from).unwrap_or_else(|_| value.to_string());
    if credential.is_empty() || (kind == "token" && UserToken::user_of(&credential).is_none()) {
        web_sys::console::warn_1(&format!("ignoring a #{kind}= link without a usable credential").into());
        return false;
    }
    store::save_credential(&credential);
    true
}

/// The bearer for a request on `user`'s behalf: that user's own token when one is saved, since it
/// is the narrowest that works, else the saved credential. `None` asks for the credential alone.
pub fn bearer(user: Option<&str>) -> Option<String> {
    user.and_then(store::load_token).or_else(store::load_credential)
}

/// Forgets `user`'s saved token when it is `sent` and the server refused it (expired, or signed
/// before the server's secret changed). True when the request is worth sending again, with the
/// credential.
pub fn forget_refused_token(user: Option<&str>, sent: Option<&str>) -> bool {
    let Some(user) = user else { return false };
    let saved = store::load_token(user);
    if saved.is_none() || saved.as_deref() != sent {
        return false;
    }
    store::save_token(user, None);
    store::load_credential().is_some_and(|credential| Some(credential.as_str()) != sent)
}
