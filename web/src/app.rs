//! The feed: cards re-ranked on the device, like/skip, load more, a user picker (or the one user
//! a token link opened) and a network indicator.

use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;
use onerec_core::api::{EventKind, FeedItem, NewEvent};
use onerec_core::rescore::{LocalPreferences, Reason, RerankConfig, rerank};

use crate::auth::{self, Access};
use crate::net::{self, Flushed, NetError};
use crate::store;

/// Cards per page.
const PAGE: usize = 10;
/// Candidates asked of the server: the slate plus the pool kept for local re-ranking and offline.
const POOL: usize = 200;
/// How often queued events are retried while the server is unreachable.
const RETRY: Duration = Duration::from_secs(3);

/// Where the items on screen came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Loading,
    Server,
    /// The pool saved on this device, because the server could not be reached.
    Cache,
}

/// The app's state: plain signals, copied into every handler.
#[derive(Clone, Copy)]
struct Feed {
    user: RwSignal<Option<String>>,
    pool: RwSignal<Vec<FeedItem>>,
    prefs: RwSignal<LocalPreferences>,
    /// Items the user already liked or skipped, in order; they leave the feed.
    consumed: RwSignal<Vec<String>>,
    shown: RwSignal<usize>,
    online: RwSignal<bool>,
    reachable: RwSignal<bool>,
    queued: RwSignal<usize>,
    source: RwSignal<Source>,
    model: RwSignal<String>,
    error: RwSignal<Option<String>>,
}

impl Feed {
    fn new() -> Self {
        let online = web_sys::window().map(|w| w.navigator().on_line()).unwrap_or(true);
        Self {
            user: RwSignal::new(None),
            pool: RwSignal::new(Vec::new()),
            prefs: RwSignal::new(LocalPreferences::default()),
            consumed: RwSignal::new(Vec::new()),
            shown: RwSignal::new(PAGE),
            online: RwSignal::new(online),
            reachable: RwSignal::new(true),
            queued: RwSignal::new(store::load_queue().len()),
            source: RwSignal::new(Source::Loading),
            model: RwSignal::new(String::new()),
            error: RwSignal::new(None),
        }
    }

    /// Switches to `user`: the state saved on this device first, so that something shows at
    /// once and offline, then a fresh pool from the server.
    fn select(self, user: Option<String>) {
        store::save_user(user.as_deref());
        let u = user.as_deref();
        self.prefs.set(store::load_prefs(u));
        self.pool.set(store::load_pool(u));
        self.consumed.set(store::load_consumed(u));
        self.shown.set(PAGE);
        self.source.set(Source::Loading);
        self.error.set(None);
        self.user.set(user);
        self.refresh();
    }

    /// Fetches a new pool; on failure the saved one stays in use.
    fn refresh(self) {
        let user = self.user.get_untracked();
        spawn_local(async move {
            match net::feed(user.as_deref(), PAGE, POOL).await {
                Ok(feed) => {
                    if let (Some(user), Some(token)) = (&user, &feed.token) {
                        store::save_token(user, Some(token));
                    }
                    let mut pool = feed.items;
                    pool.extend(feed.pool);
                    store::save_pool(user.as_deref(), &pool);
                    // A new pool holds new candidates: forget reactions to items no longer in it.
                    self.consumed.update(|c| c.retain(|id| pool.iter().any(|item| &item.id == id)));
                    store::save_consumed(user.as_deref(), &self.consumed.get_untracked());
                    self.pool.set(pool);
                    self.model.set(feed.model);
                    self.source.set(Source::Server);
                    self.reachable.set(true);
                    self.error.set(None);
                }
                Err(NetError::Unreachable(_)) => {
                    self.reachable.set(false);
                    self.source.set(Source::Cache);
                }
                Err(e) => {
                    self.source.set(Source::Cache);
                    self.error.set(Some(e.to_string()));
                }
            }
        });
    }

    /// Likes or skips an item: the local state learns at once, the item leaves the feed, and the
    /// event joins the queue for the server.
    fn react(self, item: &FeedItem, kind: EventKind) {
        let now = store::now_secs();
        let user = self.user.get_untracked();
        self.prefs.update(|p| p.observe(item, kind, None, now));
        self.consumed.update(|c| c.push(item.id.clone()));
        store::save_prefs(user.as_deref(), &self.prefs.get_untracked());
        store::save_consumed(user.as_deref(), &self.consumed.get_untracked());
        // Anonymous taste stays on the device: the server stores events per user.
        if let Some(user) = user {
            let mut queue = store::load_queue();
            queue.push(NewEvent {
                event_id: store::new_event_id(),
                user,
                item: item.id.clone(),
                kind,
                value: None,
                timestamp: Some(now as i64),
            });
            store::save_queue(&queue);
            self.queued.set(queue.len());
            self.flush();
        }
    }

    fn flush(self) {
        if !self.online.get_untracked() {
            return;
        }
        spawn_local(async move {
            match net::flush_queue().await {
                Flushed::Done => self.reachable.set(true),
                Flushed::Unreachable => self.reachable.set(false),
                Flushed::Idle => {}
            }
            self.queued.set(store::load_queue().len());
        });
    }

    /// The pool without consumed items, re-ranked on the device; the first `shown` of them.
    fn ranked(self) -> Vec<(FeedItem, Reason)> {
        let consumed = self.consumed.get();
        let candidates: Vec<FeedItem> =
            self.pool.get().into_iter().filter(|item| !consumed.contains(&item.id)).collect();
        let shown = self.shown.get();
        let config = RerankConfig { slate: shown, ..RerankConfig::default() };
        let ranked = self.prefs.with(|prefs| rerank(prefs, store::now_secs(), &candidates, &config));
        ranked.into_iter().take(shown).map(|r| (candidates[r.index].clone(), r.reason)).collect()
    }
}

/// The user given in the address (`?user=ID`), which wins over the one remembered.
fn user_from_address() -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    params.get("user").filter(|u| !u.is_empty())
}

#[component]
pub fn App() -> impl IntoView {
    auth::adopt_from_address();
    let hash = web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default();
    if hash == "#bench" {
        return view! { <crate::bench::Bench/> }.into_any();
    }
    let access = Access::current();
    let feed = Feed::new();
    feed.select(match &access {
        Access::Anonymous => None,
        Access::Operator => user_from_address().or_else(store::load_user),
        Access::User(user) => Some(user.clone()),
    });

    // A link pasted into this open tab changes only the fragment, which loads nothing: start over
    // with its credential.
    let _ = window_event_listener(leptos::ev::hashchange, |_| {
        if auth::adopt_from_address()
            && let Some(window) = web_sys::window()
        {
            let _ = window.location().reload();
        }
    });

    let _ = window_event_listener(leptos::ev::online, move |_| {
        feed.online.set(true);
        feed.flush();
        feed.refresh();
    });
    let _ = window_event_listener(leptos::ev::offline, move |_| feed.online.set(false));
    set_interval(
        move || {
            if feed.queued.get_untracked() > 0 {
                feed.flush();
            }
        },
        RETRY,
    );
    feed.flush();

    let ranked = Memo::new(move |_| feed.ranked());
    view! {
        <header>
            <h1>"onerec"</h1>
            <NetIndicator feed/>
            <UserPicker feed access/>
        </header>
        <Status feed/>
        <main id="feed">
            <For
                each=move || ranked.get()
                key=|(item, _)| item.id.clone()
                children=move |(item, reason)| view! { <Card feed item reason/> }
            />
        </main>
        <footer>
            <button id="load-more" on:click=move |_| feed.shown.update(|s| *s += PAGE)>"Load more"</button>
            <button id="refresh" on:click=move |_| feed.refresh()>"New candidates"</button>
        </footer>
    }
    .into_any()
}

#[component]
fn NetIndicator(feed: Feed) -> impl IntoView {
    let state = move || match (feed.online.get(), feed.reachable.get()) {
        (false, _) => "offline",
        (true, false) => "server unreachable",
        (true, true) => "online",
    };
    view! {
        <span id="net" class=move || format!("net {}", state().replace(' ', "-")) data-online=move || (state() == "online").to_string()>
            {state}
        </span>
        <span id="queued" data-count=move || feed.queued.get().to_string()>
            {move || match feed.queued.get() { 0 => String::new(), n => format!("{n} events queued") }}
        </span>
    }
}

/// Who the feed is for, as far as the credential allows: any user with an API key, only the
/// token's user with a user token, and nobody without a credential.
#[component]
fn UserPicker(feed: Feed, access: Access) -> impl IntoView {
    match access {
        Access::Anonymous => view! {
            <span class="picker" id="user-locked">"Anonymous feed: open a link with a key or user token to pick a user"</span>
        }
        .into_any(),
        Access::User(user) => view! {
            <span class="picker">
                <select id="user" disabled>
                    <option value=user.clone() selected>{format!("user {user}")}</option>
                </select>
            </span>
        }
        .into_any(),
        Access::Operator => view! { <AnyUser feed/> }.into_any(),
    }
}

/// The operator's picker: the server's users, or any id typed in.
#[component]
fn AnyUser(feed: Feed) -> impl IntoView {
    let users = RwSignal::new(Vec::<String>::new());
    spawn_local(async move {
        if let Ok(list) = net::users(50).await {
            users.set(list.users);
        }
    });
    let typed = RwSignal::new(String::new());
    let sign_in = move || {
        let id = typed.get_untracked().trim().to_string();
        feed.select((!id.is_empty()).then_some(id));
    };
    view! {
        <span class="picker">
            <select id="user" on:change=move |ev| {
                let id = event_target_value(&ev);
                feed.select((!id.is_empty()).then_some(id));
            }>
                <option value="" selected=move || feed.user.get().is_none()>"anonymous"</option>
                {move || {
                    let current = feed.user.get();
                    let mut list = users.get();
                    if let Some(c) = &current
                        && !list.contains(c)
                    {
                        list.insert(0, c.clone());
                    }
                    list.into_iter()
                        .map(|u| {
                            let selected = current.as_deref() == Some(u.as_str());
                            view! { <option value=u.clone() selected=selected>{format!("user {u}")}</option> }
                        })
                        .collect_view()
                }}
            </select>
            <input id="user-id" placeholder="user id" prop:value=move || typed.get()
                on:input=move |ev| typed.set(event_target_value(&ev))
                on:keydown=move |ev| if ev.key() == "Enter" { sign_in() } />
            <button id="sign-in" on:click=move |_| sign_in()>"Sign in"</button>
        </span>
    }
}

#[component]
fn Status(feed: Feed) -> impl IntoView {
    view! {
        <p id="status" data-source=move || format!("{:?}", feed.source.get()).to_lowercase()>
            {move || {
                let n = feed.pool.with(Vec::len);
                match (feed.source.get(), feed.online.get()) {
                    (Source::Loading, _) => "Loading…".to_string(),
                    (Source::Server, true) => format!("{n} candidates from the server, re-ranked on this device"),
                    _ => format!("Offline: {n} saved candidates, re-ranked on this device"),
                }
            }}
            " · "
            <span id="signals" data-count=move || feed.prefs.with(|p| p.events()).to_string()>
                {move || format!("{} signals learned on this device", feed.prefs.with(|p| p.events()))}
            </span>
            {move || feed.error.get().map(|e| view! { <span class="error">" · " {e}</span> })}
        </p>
    }
}

#[component]
fn Card(feed: Feed, item: FeedItem, reason: Reason) -> impl IntoView {
    let hint = reason.hint();
    let tags = item.tags.join(",");
    let (like, skip) = (item.clone(), item.clone());
    view! {
        <article class="card" data-id=item.id.clone() data-tags=tags>
            <h2>{item.title.clone()}</h2>
            <p class="tags">{item.tags.iter().map(|t| view! { <span class="tag">{t.clone()}</span> }).collect_view()}</p>
            <p class="why">{hint}</p>
            <div class="actions">
                <button class="like" on:click=move |_| feed.react(&like, EventKind::Like)>"♥ Like"</button>
                <button class="skip" on:click=move |_| feed.react(&skip, EventKind::Skip)>"Skip"</button>
            </div>
        </article>
    }
}
