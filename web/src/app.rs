//! The feed: cards re-ranked on the device, like/skip (by button or key), load more, the user's
//! activity with undo, a user picker (or the one user a token link opened), a network indicator
//! and the server's own words when it refuses.

use std::rc::Rc;
use std::time::Duration;

use leptos::either::Either;
use leptos::prelude::*;
use leptos::task::spawn_local;
use onerec_core::api::{EventKind, FeedItem, NewEvent};
use onerec_core::rescore::{LocalPreferences, Reason, RerankConfig, rerank, tag_label};
use wasm_bindgen::JsCast;

use crate::auth::{self, Access};
use crate::exposure;
use crate::net::{self, Flushed, NetError};
use crate::store::{self, Reaction};

/// Cards per page.
const PAGE: usize = 10;
/// Candidates asked of the server: the slate plus the pool kept for local re-ranking and offline.
const POOL: usize = 200;
/// How often queued events are retried while the server is unreachable.
const RETRY: Duration = Duration::from_secs(3);
/// Reactions kept for the activity panel when a new pool comes; older ones are kept only while
/// their item is in the pool, to keep it out of the feed.
const LISTED: usize = 50;

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
    /// The user's likes and skips, newest first; their items leave the feed until undone.
    reactions: RwSignal<Vec<Reaction>>,
    shown: RwSignal<usize>,
    /// The position of the card the keyboard acts on.
    focus: RwSignal<usize>,
    online: RwSignal<bool>,
    reachable: RwSignal<bool>,
    queued: RwSignal<usize>,
    source: RwSignal<Source>,
    model: RwSignal<String>,
    /// The request id of the feed the pool came from, sent with each event so that the server
    /// counts it toward the experiment arm that served it; none for a pool from the cache.
    request_id: RwSignal<Option<String>>,
    error: RwSignal<Option<String>>,
}

impl Feed {
    fn new() -> Self {
        let online = web_sys::window().map(|w| w.navigator().on_line()).unwrap_or(true);
        Self {
            user: RwSignal::new(None),
            pool: RwSignal::new(Vec::new()),
            prefs: RwSignal::new(LocalPreferences::default()),
            reactions: RwSignal::new(Vec::new()),
            shown: RwSignal::new(PAGE),
            focus: RwSignal::new(0),
            online: RwSignal::new(online),
            reachable: RwSignal::new(true),
            queued: RwSignal::new(store::load_queue().len()),
            source: RwSignal::new(Source::Loading),
            model: RwSignal::new(String::new()),
            request_id: RwSignal::new(None),
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
        self.request_id.set(None);
        self.reactions.set(store::load_reactions(u));
        self.shown.set(PAGE);
        self.focus.set(0);
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
                    // A new pool holds new candidates: forget reactions to items no longer in it,
                    // but for the newest, which the activity panel lists.
                    let mut rank = 0;
                    self.reactions.update(|r| {
                        r.retain(|reaction| {
                            rank += 1;
                            rank <= LISTED || pool.iter().any(|item| item.id == reaction.item.id)
                        })
                    });
                    store::save_reactions(user.as_deref(), &self.reactions.get_untracked());
                    self.pool.set(pool);
                    self.model.set(feed.model);
                    self.request_id.set(Some(feed.request_id).filter(|r| !r.is_empty()));
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
        self.reactions.update(|r| r.insert(0, Reaction { item: item.clone(), kind }));
        store::save_prefs(user.as_deref(), &self.prefs.get_untracked());
        store::save_reactions(user.as_deref(), &self.reactions.get_untracked());
        self.send(user, &item.id, kind, None, now);
    }

    /// Takes back the reaction to item `id`: the local state forgets it, the item returns to the
    /// feed, and an undo joins the queue so that the server's model forgets it too.
    fn undo(self, id: &str) {
        let taken = self.reactions.try_update(|r| r.iter().position(|x| x.item.id == id).map(|i| r.remove(i)));
        let Some(Reaction { item, kind }) = taken.flatten() else { return };
        let now = store::now_secs();
        let user = self.user.get_untracked();
        self.prefs.update(|p| p.take_back(&item, kind, None, now));
        store::save_prefs(user.as_deref(), &self.prefs.get_untracked());
        store::save_reactions(user.as_deref(), &self.reactions.get_untracked());
        // The pool that held the item may have been replaced since, by one without it.
        if self.pool.with_untracked(|pool| pool.iter().all(|i| i.id != item.id)) {
            self.pool.update(|pool| pool.push(item.clone()));
            store::save_pool(user.as_deref(), &self.pool.get_untracked());
        }
        self.send(user, &item.id, EventKind::Undo, None, now);
    }

    /// Queues an event for the server and tries to send it. Anonymous taste stays on the device:
    /// the server stores events per user.
    fn send(self, user: Option<String>, item: &str, kind: EventKind, value: Option<f32>, now: f64) {
        let Some(user) = user else { return };
        let mut queue = store::load_queue();
        queue.push(NewEvent {
            event_id: store::new_event_id(),
            user,
            item: item.to_string(),
            kind,
            value,
            timestamp: Some(now as i64),
            request_id: self.request_id.get_untracked(),
        });
        store::save_queue(&queue);
        self.queued.set(queue.len());
        self.flush();
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

    /// The pool without the items reacted to, re-ranked on the device; the first `shown` of them.
    fn ranked(self) -> Vec<(FeedItem, Reason)> {
        let candidates: Vec<FeedItem> = self.reactions.with(|reactions| {
            let reacted = |item: &FeedItem| reactions.iter().any(|r| r.item.id == item.id);
            self.pool.get().into_iter().filter(|item| !reacted(item)).collect()
        });
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
    exposure::start(Rc::new(move |item, kind, value| {
        feed.send(feed.user.get_untracked(), item, kind, value, store::now_secs())
    }));
    let _ = window_event_listener(leptos::ev::pagehide, |_| exposure::page_hidden());
    let _ = window_event_listener_untyped("visibilitychange", |_| {
        if document().hidden() { exposure::page_hidden() } else { exposure::page_shown() }
    });
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
    shortcuts(feed, ranked);
    let focused = Memo::new(move |_| {
        ranked.with(|r| r.get(feed.focus.get().min(r.len().saturating_sub(1))).map(|(item, _)| item.id.clone()))
    });
    // With nothing left to show, the empty state offers more; after a refusal, the banner says why.
    let empty =
        move || feed.source.get() != Source::Loading && feed.error.with(Option::is_none) && ranked.with(Vec::is_empty);
    view! {
        <header>
            <h1>"onerec"</h1>
            <NetIndicator feed/>
            <UserPicker feed access/>
        </header>
        <ErrorBanner feed/>
        <Status feed/>
        <div class="page">
            <div>
                <main id="feed">
                    <For
                        each=move || ranked.get()
                        key=|(item, _)| item.id.clone()
                        children=move |(item, reason)| view! { <Card feed item reason focused/> }
                    />
                </main>
                {move || if empty() { Either::Left(view! { <Empty feed/> }) } else { Either::Right(view! { <More feed/> }) }}
            </div>
            <Activity feed/>
        </div>
    }
    .into_any()
}

/// Keys for the focused card: `l` like, `s` skip, `j`/`↓` next, `k`/`↑` previous, and `u` undoes
/// the latest reaction. Keys typed into a field are text, and those with a modifier the browser's.
fn shortcuts(feed: Feed, ranked: Memo<Vec<(FeedItem, Reason)>>) {
    let _ = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.ctrl_key() || ev.meta_key() || ev.alt_key() || typing(&ev) {
            return;
        }
        let len = ranked.with_untracked(Vec::len);
        let at = feed.focus.get_untracked().min(len.saturating_sub(1));
        let focused = move || ranked.with_untracked(|r| r.get(at).map(|(item, _)| item.clone()));
        match ev.key().as_str() {
            // A held key repeats: it must not like or skip a whole page.
            "l" | "s" if !ev.repeat() => {
                let kind = if ev.key() == "l" { EventKind::Like } else { EventKind::Skip };
                if let Some(item) = focused() {
                    feed.react(&item, kind);
                }
            }
            "u" if !ev.repeat() => {
                if let Some(id) = feed.reactions.with_untracked(|r| r.first().map(|r| r.item.id.clone())) {
                    feed.undo(&id);
                }
            }
            "j" | "ArrowDown" => {
                // Past the last card of a full page: show the next page.
                if at + 1 >= len && len == feed.shown.get_untracked() {
                    feed.shown.update(|s| *s += PAGE);
                }
                let len = ranked.with_untracked(Vec::len);
                feed.focus.set((at + 1).min(len.saturating_sub(1)));
            }
            "k" | "ArrowUp" => feed.focus.set(at.saturating_sub(1)),
            _ => return,
        }
        ev.prevent_default();
        // Once the DOM shows the new focus, keep it in view.
        request_animation_frame(|| {
            if let Ok(Some(card)) = document().query_selector("article.card.focused") {
                let options = web_sys::ScrollIntoViewOptions::new();
                options.set_block(web_sys::ScrollLogicalPosition::Nearest);
                card.scroll_into_view_with_scroll_into_view_options(&options);
            }
        });
    });
}

/// Whether a key goes to a form field, where it is text.
fn typing(ev: &web_sys::KeyboardEvent) -> bool {
    ev.target()
        .and_then(|target| target.dyn_into::<web_sys::Element>().ok())
        .is_some_and(|e| matches!(e.tag_name().as_str(), "INPUT" | "SELECT" | "TEXTAREA"))
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
                match (feed.source.get(), feed.online.get() && feed.reachable.get()) {
                    (Source::Loading, _) => "Loading…".to_string(),
                    (Source::Server, true) => format!("{n} candidates from the server, re-ranked on this device"),
                    // Reachable, but the server refused: the banner says why.
                    (_, true) => format!("{n} saved candidates, re-ranked on this device"),
                    _ => format!("Offline: {n} saved candidates, re-ranked on this device"),
                }
            }}
            " · "
            <span id="signals" data-count=move || feed.prefs.with(|p| p.events()).to_string()>
                {move || format!("{} signals learned on this device", feed.prefs.with(|p| p.events()))}
            </span>
        </p>
    }
}

/// The server's own words when it refused the feed; being offline has the indicator instead.
#[component]
fn ErrorBanner(feed: Feed) -> impl IntoView {
    move || {
        feed.error.get().map(|mut message| {
            // The server's details start in lower case; ASCII is enough for them, and Unicode's
            // case tables would cost kilobytes of wasm.
            if let Some(first) = message.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            view! {
                <div id="error" class="banner" role="alert">
                    <p><strong>"Could not load the feed."</strong>" "{message}</p>
                    <button class="dismiss" title="Dismiss" on:click=move |_| feed.error.set(None)>"×"</button>
                </div>
            }
        })
    }
}

/// More cards from the pool, or a new pool from the server.
#[component]
fn More(feed: Feed) -> impl IntoView {
    view! {
        <footer>
            <button id="load-more" on:click=move |_| feed.shown.update(|s| *s += PAGE)>"Load more"</button>
            <button id="refresh" on:click=move |_| feed.refresh()>"New candidates"</button>
        </footer>
    }
}

/// Shown when every candidate has been liked or skipped: more can only come from the server.
#[component]
fn Empty(feed: Feed) -> impl IntoView {
    view! {
        <section id="empty">
            <p>
                {move || match feed.pool.with(Vec::len) {
                    0 => "No candidates left to show.".to_string(),
                    n => format!("You have seen all {n} candidates."),
                }}
                " Fetch more from the server, or undo a skip in your activity."
            </p>
            <button id="fetch-more" on:click=move |_| feed.refresh()>"Fetch more"</button>
        </section>
    }
}

/// The likes and skips made on this device, newest first, each with an undo; and the keys.
#[component]
fn Activity(feed: Feed) -> impl IntoView {
    view! {
        <aside id="activity" data-count=move || feed.reactions.with(Vec::len).to_string()>
            <h2>"Your activity"</h2>
            {move || {
                let reactions = feed.reactions.get();
                if reactions.is_empty() {
                    return view! { <p class="quiet">"Likes and skips show here, to undo."</p> }.into_any();
                }
                let rows = reactions.into_iter().map(|Reaction { item, kind }| {
                    let (label, class) = if kind == EventKind::Like { ("♥ Liked", "like") } else { ("Skipped", "skip") };
                    let (id, tooltip) = (item.id.clone(), item.title.clone());
                    view! {
                        <li data-id=item.id data-kind=class>
                            <span class=format!("kind {class}")>{label}</span>
                            <span class="title" title=tooltip>{item.title}</span>
                            <button class="undo" on:click=move |_| feed.undo(&id)>"Undo"</button>
                        </li>
                    }
                });
                view! { <ol>{rows.collect_view()}</ol> }.into_any()
            }}
            <p id="keys" class="quiet">
                <span><kbd>"l"</kbd>" like"</span>
                <span><kbd>"s"</kbd>" skip"</span>
                <span><kbd>"j"</kbd><kbd>"↓"</kbd>" next"</span>
                <span><kbd>"k"</kbd><kbd>"↑"</kbd>" previous"</span>
                <span><kbd>"u"</kbd>" undo"</span>
            </p>
        </aside>
    }
}

#[component]
fn Card(
    feed: Feed,
    item: FeedItem,
    reason: Reason,
    /// The id of the card the keyboard acts on, which is highlighted.
    focused: Memo<Option<String>>,
) -> impl IntoView {
    let hint = reason.hint();
    let id = item.id.clone();
    let tags = item.tags.join(",");
    let (like, skip) = (item.clone(), item.clone());
    // Watched for impressions and dwell while it is in the feed.
    let card = NodeRef::<leptos::html::Article>::new();
    Effect::new(move |_| {
        if let Some(element) = card.get() {
            exposure::observe(&element);
        }
    });
    let leaving = item.id.clone();
    on_cleanup(move || exposure::removed(&leaving));
    view! {
        <article node_ref=card class="card" class:focused=move || focused.with(|f| f.as_ref() == Some(&id)) data-id=item.id.clone() data-tags=tags>
            <h2>{item.title.clone()}</h2>
            <p class="tags">{item.tags.iter().map(|t| view! { <span class="tag">{tag_label(t)}</span> }).collect_view()}</p>
            <p class="why">{hint}</p>
            <div class="actions">
                <button class="like" on:click=move |_| feed.react(&like, EventKind::Like)>"♥ Like"</button>
                <button class="skip" on:click=move |_| feed.react(&skip, EventKind::Skip)>"Skip"</button>
            </div>
        </article>
    }
}
