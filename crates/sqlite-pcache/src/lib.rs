//! SQLite's own page cache, with one needless cost taken out: a commit that sweeps the whole cache for pages past
//! the end of the database when there are none.
//!
//! At the end of every write transaction SQLite drops cached pages past the database's last page
//! (`sqlite3PcacheTruncate`). Its page cache (`pcache1`) skips that when no page was ever cached past the end, and
//! otherwise walks its whole hash table, every bucket and every page. While a database is under 1 GiB, one page
//! number past its end is always in use: when SQLite rebalances a B-tree it puts its new pages in order by swapping
//! their numbers, parking one for a moment at the number of the lock page (the page holding the byte at 1 GiB,
//! which no database ever uses). The cache remembers the highest number it has seen, so from the first rebalance on,
//! every commit of a database under 1 GiB walks the whole cache. With smsgate's 64 MB writer cache (16,000 pages)
//! that walk was 15 % of the SQLite writer's time at 7,000 messages a second, and the submit latency halved when the
//! database passed 1 GiB (BENCHMARKS.md, eighteenth session).
//!
//! This cache forwards every call to SQLite's own, and keeps beside it the highest page number really in the cache
//! (any page fetched or moved there, but a page parked at the lock page, which is counted instead). A truncation
//! that can find nothing to drop is not forwarded; any other is. The pages themselves, their memory and their
//! eviction stay SQLite's.
//!
//! [`install`] puts it in place; it must run before SQLite is first used in the process.

use std::ffi::{c_int, c_uint};
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rusqlite::ffi;

/// Why [`install`] did not put the cache in place. SQLite then keeps its own, which works the same, only slower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// SQLite was already initialized in this process (a connection was opened before), or `install` ran before.
    TooLate,
    /// SQLite refused the configuration with this result code.
    Sqlite(c_int),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLate => f.write_str("SQLite was already in use in this process"),
            Error::Sqlite(rc) => write!(f, "SQLite refused the page cache (result code {rc})"),
        }
    }
}

impl std::error::Error for Error {}

/// How many truncations the caches were asked for, and how many of them were forwarded to SQLite's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Truncations asked for.
    pub asked: u64,
    /// Truncations forwarded (there may have been pages to drop).
    pub forwarded: u64,
    /// Times a page was parked at the lock page (a B-tree's new pages put in order).
    pub parked: u64,
}

/// The counts since the process started (all caches together).
pub fn stats() -> Stats {
    Stats {
        asked: ASKED.load(Ordering::Relaxed),
        forwarded: FORWARDED.load(Ordering::Relaxed),
        parked: PARKED.load(Ordering::Relaxed),
    }
}

/// Puts the cache in place for every SQLite connection the process opens from now on.
///
/// # Safety
/// SQLite's configuration is not thread-safe: no other thread may use SQLite while this runs. Call it at the start
/// of `main`, before any thread is started; if SQLite was already initialized it changes nothing and says so.
pub unsafe fn install() -> Result<(), Error> {
    if SQLITE.get().is_some() {
        return Err(Error::TooLate);
    }
    let mut default = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
    // SAFETY: the caller guarantees no other thread uses SQLite now. GETPCACHE2 writes one
    // sqlite3_pcache_methods2 through the pointer, which points at one (zeroed, so valid either way).
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, default.as_mut_ptr()) };
    match rc {
        ffi::SQLITE_OK => {}
        ffi::SQLITE_MISUSE => return Err(Error::TooLate),
        rc => return Err(Error::Sqlite(rc)),
    }
    // SAFETY: zeroed, then filled by SQLite; every field is a pointer or an optional function pointer, for which
    // all zeroes is valid.
    let default = unsafe { default.assume_init() };
    // SQLite's own cache fills every method but xShrink (optional in the interface).
    let inner = (|| {
        Some(Inner {
            create: default.xCreate?,
            cachesize: default.xCachesize?,
            pagecount: default.xPagecount?,
            fetch: default.xFetch?,
            unpin: default.xUnpin?,
            rekey: default.xRekey?,
            truncate: default.xTruncate?,
            destroy: default.xDestroy?,
            shrink: default.xShrink,
        })
    })()
    .ok_or(Error::Sqlite(ffi::SQLITE_ERROR))?;
    if SQLITE.set(inner).is_err() {
        return Err(Error::TooLate);
    }
    let ours = ffi::sqlite3_pcache_methods2 {
        iVersion: default.iVersion,
        pArg: default.pArg,
        xInit: default.xInit,
        xShutdown: default.xShutdown,
        xCreate: Some(create_cache),
        xCachesize: Some(set_cache_size),
        xPagecount: Some(page_count),
        xFetch: Some(fetch_page),
        xUnpin: Some(unpin_page),
        xRekey: Some(rekey_page),
        xTruncate: Some(truncate_cache),
        xDestroy: Some(destroy_cache),
        xShrink: Some(shrink_cache),
    };
    // SAFETY: as above, no other thread uses SQLite. PCACHE2 copies the struct, whose functions are this module's
    // (they live as long as the process) and SQLite's own.
    match unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const ffi::sqlite3_pcache_methods2) } {
        ffi::SQLITE_OK => Ok(()),
        ffi::SQLITE_MISUSE => Err(Error::TooLate),
        rc => Err(Error::Sqlite(rc)),
    }
}

/// The byte SQLite locks files at (`PENDING_BYTE`); the page holding it is never part of a database.
const LOCK_BYTE: u32 = 0x4000_0000;

static ASKED: AtomicU64 = AtomicU64::new(0);
static FORWARDED: AtomicU64 = AtomicU64::new(0);
static PARKED: AtomicU64 = AtomicU64::new(0);

/// SQLite's own page cache, which every call is forwarded to.
struct Inner {
    create: unsafe extern "C" fn(c_int, c_int, c_int) -> *mut ffi::sqlite3_pcache,
    cachesize: unsafe extern "C" fn(*mut ffi::sqlite3_pcache, c_int),
    pagecount: unsafe extern "C" fn(*mut ffi::sqlite3_pcache) -> c_int,
    fetch: unsafe extern "C" fn(*mut ffi::sqlite3_pcache, c_uint, c_int) -> *mut ffi::sqlite3_pcache_page,
    unpin: unsafe extern "C" fn(*mut ffi::sqlite3_pcache, *mut ffi::sqlite3_pcache_page, c_int),
    rekey: unsafe extern "C" fn(*mut ffi::sqlite3_pcache, *mut ffi::sqlite3_pcache_page, c_uint, c_uint),
    truncate: unsafe extern "C" fn(*mut ffi::sqlite3_pcache, c_uint),
    destroy: unsafe extern "C" fn(*mut ffi::sqlite3_pcache),
    shrink: Option<unsafe extern "C" fn(*mut ffi::sqlite3_pcache)>,
}

static SQLITE: OnceLock<Inner> = OnceLock::new();

/// One cache: SQLite's, and what is known of the page numbers in it. SQLite uses a cache from one thread at a time
/// (its connection's); the atomics are only so that Rust need not take that on trust.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The lock page's number at this cache's page size (0 if the size was not one SQLite uses).
    lock_page: u32,
    /// No page in the cache has a higher number, but pages parked at the lock page.
    max_page: AtomicU32,
    /// Pages moved to the lock page and not yet moved away.
    parked: AtomicU32,
}

fn sqlite() -> &'static Inner {
    // Only reachable through functions handed to SQLite after SQLITE was set.
    SQLITE.get().expect("the page cache is installed before SQLite can call it")
}

/// # Safety
/// `p` must be a pointer [`create_cache`] returned and [`destroy_cache`] has not freed.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a Cache {
    // SAFETY: by the caller's guarantee, `p` is a live Box<Cache> turned into a raw pointer.
    unsafe { &*p.cast::<Cache>() }
}

unsafe extern "C" fn create_cache(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    // SAFETY: SQLite's own xCreate, called with SQLite's arguments.
    let inner = unsafe { (sqlite().create)(page_size, extra, purgeable) };
    if inner.is_null() {
        return std::ptr::null_mut();
    }
    let lock_page = u32::try_from(page_size).ok().filter(|s| *s > 0).map_or(0, |s| LOCK_BYTE / s + 1);
    let cache = Cache { inner, lock_page, max_page: AtomicU32::new(0), parked: AtomicU32::new(0) };
    Box::into_raw(Box::new(cache)).cast()
}

unsafe extern "C" fn set_cache_size(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY: SQLite passes back a cache create_cache made; its inner cache is SQLite's.
    unsafe { (sqlite().cachesize)(cache(p).inner, pages) }
}

unsafe extern "C" fn page_count(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as in set_cache_size.
    unsafe { (sqlite().pagecount)(cache(p).inner) }
}

unsafe extern "C" fn fetch_page(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as in set_cache_size.
    let c = unsafe { cache(p) };
    // SAFETY: SQLite's own xFetch on its own cache.
    let page = unsafe { (sqlite().fetch)(c.inner, key, create) };
    if !page.is_null() {
        c.max_page.fetch_max(key, Ordering::Relaxed);
    }
    page
}

unsafe extern "C" fn unpin_page(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    // SAFETY: as in set_cache_size; the page is one SQLite's cache gave out. A page parked at the lock page and
    // discarded stays counted as parked, which only makes truncations go through.
    unsafe { (sqlite().unpin)(cache(p).inner, page, discard) }
}

unsafe extern "C" fn rekey_page(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    from: c_uint,
    to: c_uint,
) {
    // SAFETY: as in set_cache_size.
    let c = unsafe { cache(p) };
    // SAFETY: SQLite's own xRekey on its own cache and page.
    unsafe { (sqlite().rekey)(c.inner, page, from, to) };
    if c.lock_page != 0 && to == c.lock_page {
        c.parked.fetch_add(1, Ordering::Relaxed);
        PARKED.fetch_add(1, Ordering::Relaxed);
    } else {
        c.max_page.fetch_max(to, Ordering::Relaxed);
    }
    if c.lock_page != 0 && from == c.lock_page {
        // A page fetched at the lock page (never parked) is already under max_page.
        let _ = c.parked.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

unsafe extern "C" fn truncate_cache(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as in set_cache_size.
    let c = unsafe { cache(p) };
    ASKED.fetch_add(1, Ordering::Relaxed);
    // Every page in the cache is numbered at most max_page, or parked: with none parked and max_page below the
    // limit, there is nothing at or past it to drop.
    if c.parked.load(Ordering::Relaxed) == 0 && limit > c.max_page.load(Ordering::Relaxed) {
        return;
    }
    FORWARDED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: SQLite's own xTruncate on its own cache.
    unsafe { (sqlite().truncate)(c.inner, limit) };
    // Every page numbered `limit` or more is gone, parked ones too if the lock page is among them.
    c.max_page.fetch_min(limit.saturating_sub(1), Ordering::Relaxed);
    if limit <= c.lock_page {
        c.parked.store(0, Ordering::Relaxed);
    }
}

unsafe extern "C" fn destroy_cache(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: SQLite destroys each cache once, after its last use: take back the Box create_cache made.
    let c = unsafe { Box::from_raw(p.cast::<Cache>()) };
    // SAFETY: SQLite's own xDestroy on its own cache, once.
    unsafe { (sqlite().destroy)(c.inner) }
}

unsafe extern "C" fn shrink_cache(p: *mut ffi::sqlite3_pcache) {
    if let Some(shrink) = sqlite().shrink {
        // SAFETY: as in set_cache_size.
        unsafe { shrink(cache(p).inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of SQLite's own behind this one, at SQLite's default page size.
    struct TestCache(*mut ffi::sqlite3_pcache);

    impl TestCache {
        fn new() -> TestCache {
            // SAFETY: SQLite is initialized (set_up) and the arguments are SQLite's usual ones.
            let p = unsafe { create_cache(4096, 64, 1) };
            assert!(!p.is_null());
            // SAFETY: p is a live cache.
            unsafe { set_cache_size(p, 1_000) };
            TestCache(p)
        }

        /// Puts page `key` in the cache, unpinned.
        fn put(&self, key: u32) {
            // SAFETY: p is a live cache; the page is unpinned right after, as SQLite's pager does.
            unsafe {
                let page = fetch_page(self.0, key, 2);
                assert!(!page.is_null());
                unpin_page(self.0, page, 0);
            }
        }

        fn has(&self, key: u32) -> bool {
            // SAFETY: p is a live cache; a page found is unpinned again.
            unsafe {
                let page = fetch_page(self.0, key, 0);
                if !page.is_null() {
                    unpin_page(self.0, page, 0);
                }
                !page.is_null()
            }
        }

        /// Page `key`, pinned (SQLite moves pinned pages, holding them rather than fetching them again).
        fn pin(&self, key: u32) -> *mut ffi::sqlite3_pcache_page {
            // SAFETY: p is a live cache.
            let page = unsafe { fetch_page(self.0, key, 0) };
            assert!(!page.is_null());
            page
        }

        fn unpin(&self, page: *mut ffi::sqlite3_pcache_page) {
            // SAFETY: p is a live cache and the page one it gave out, pinned.
            unsafe { unpin_page(self.0, page, 0) }
        }

        fn rekey(&self, page: *mut ffi::sqlite3_pcache_page, from: u32, to: u32) {
            // SAFETY: p is a live cache and the page one it gave out, pinned.
            unsafe { rekey_page(self.0, page, from, to) }
        }

        fn truncate(&self, limit: u32) -> bool {
            let before = stats().forwarded;
            // SAFETY: p is a live cache.
            unsafe { truncate_cache(self.0, limit) };
            stats().forwarded > before
        }

        fn pages(&self) -> c_int {
            // SAFETY: p is a live cache.
            unsafe { page_count(self.0) }
        }
    }

    impl Drop for TestCache {
        fn drop(&mut self) {
            // SAFETY: p is a live cache, destroyed once.
            unsafe { destroy_cache(self.0) }
        }
    }

    /// Which truncations go through, checked against what SQLite's cache then holds. One test: the counts are the
    /// process's, and install must come before SQLite's first use.
    #[test]
    fn a_truncation_goes_through_exactly_when_a_page_is_at_or_past_its_limit() {
        // SAFETY: this test binary's only test, run before any other use of SQLite.
        unsafe { install() }.expect("install");
        // SAFETY: initializing SQLite is thread-safe; it calls the cache's xInit.
        assert_eq!(unsafe { ffi::sqlite3_initialize() }, ffi::SQLITE_OK);
        let lock_page = LOCK_BYTE / 4096 + 1;

        let c = TestCache::new();
        for key in 1..=100 {
            c.put(key);
        }
        assert_eq!(c.pages(), 100);
        // Nothing at or past 101: not forwarded, nothing lost.
        assert!(!c.truncate(101));
        assert_eq!(c.pages(), 100);
        // Pages 81..=100 go.
        assert!(c.truncate(81));
        assert_eq!(c.pages(), 80);
        assert!(c.has(80) && !c.has(81));
        assert!(!c.truncate(81));

        // A page parked at the lock page and moved on, as a B-tree's rebalance does: the cache's own highest
        // number is now the lock page's, this one's is not.
        let a = c.pin(10);
        c.rekey(a, 10, lock_page);
        c.unpin(a);
        assert!(c.truncate(81), "a parked page is past any limit");
        assert_eq!(c.pages(), 79, "a truncation below the lock page drops a page parked there");
        c.put(10);
        let (a, b) = (c.pin(10), c.pin(20));
        c.rekey(a, 10, lock_page);
        c.rekey(b, 20, 10);
        c.rekey(a, lock_page, 20);
        c.unpin(a);
        c.unpin(b);
        assert_eq!(c.pages(), 80);
        assert!(!c.truncate(81), "nothing is past 80 once the page moved on");
        assert_eq!(c.pages(), 80);

        // A page moved past the end (as incremental vacuum does) is past the limit.
        let a = c.pin(5);
        c.rekey(a, 5, 200);
        c.unpin(a);
        assert!(c.truncate(81));
        assert_eq!(c.pages(), 79);
        assert!(!c.has(200));

        // A page fetched at a high number, and clearing the cache (a reader's reset).
        c.put(5_000);
        assert!(c.truncate(81));
        assert!(!c.has(5_000));
        assert!(c.truncate(1));
        assert_eq!(c.pages(), 0);
        assert!(!c.truncate(1), "an empty cache needs no sweep");
    }
}
