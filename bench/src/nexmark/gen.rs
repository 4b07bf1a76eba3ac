//! A deterministic NEXMark generator, after the Beam/Flink one: event `i` is a function of
//! `(seed, i)` only, so any instance can produce any slice of the stream and a sequential
//! reference sees exactly the events the engine sees.
//!
//! - Out of every 50 events, 1 is a Person, 3 are Auctions and 46 are Bids (offset 0 is the
//!   Person, offsets 1..=3 the Auctions), as in NEXMark.
//! - Ids start at 1000 (persons and auctions) and grow with the event index; sellers and bidders
//!   are drawn from the last 1000 persons (plus a lead of 10 not yet created), auctions from the
//!   last 100 (plus a lead of 10), and hot ones are favoured: half of all bids go to the current
//!   hot auction (the last multiple of 100), three quarters of bidders and sellers are the
//!   current hot person (the last multiple of 100, plus 1 for bidders).
//! - Prices are `round(10^(6u) * 100)` cents for a uniform `u` (1 $ to 1 M$, log-uniform).
//! - Event time is `BASE_TIME_MS + i * INTER_EVENT_MS`: a fixed logical rate, unique per event.

use dirigo_actors::record::mix64;

/// Event time of event 0 (ms; a multiple of every window size used).
pub const BASE_TIME_MS: u64 = 1_700_000_000_000;
/// Event time between consecutive events (ms): a logical rate of 100 events/s, so a 10 s window
/// holds 1,000 events (20 persons, 60 auctions, 920 bids).
pub const INTER_EVENT_MS: u64 = 10;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const BID_PROPORTION: u64 = 46;
const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// First person id.
pub const FIRST_PERSON_ID: u64 = 1000;
/// First auction id.
pub const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const PERSON_ID_LEAD: u64 = 10;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const AUCTION_ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_SELLER_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
/// 1 in `HOT_AUCTIONS` bids is not for the hot auction (Beam's `hotAuctionRatio` = 2).
const HOT_AUCTIONS: u64 = 2;
/// 1 in 4 sellers / bidders is not the hot one (Beam's `hotSellersRatio`/`hotBiddersRatio`).
const HOT_SELLERS: u64 = 4;
const HOT_BIDDERS: u64 = 4;

const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// A new person (a user who registers).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
    pub date_time: u64,
}

/// A new auction opened by `seller`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Auction {
    pub id: u64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: u64,
    pub reserve: u64,
    pub date_time: u64,
    pub expires: u64,
    pub seller: u64,
    pub category: u64,
}

/// A bid of `price` cents by `bidder` on `auction`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub channel: String,
    pub url: String,
    pub date_time: u64,
}

/// One NEXMark event.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// Event time (ms).
    pub fn date_time(&self) -> u64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// SplitMix64, seeded per event.
struct Rng(u64);

impl Rng {
    fn for_event(seed: u64, i: u64) -> Self {
        Rng(mix64(seed ^ mix64(i.wrapping_add(0x9e37_79b9_7f4a_7c15))))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn word(&mut self, len: usize) -> String {
        (0..len).map(|_| (b'a' + self.below(26) as u8) as char).collect()
    }
    fn price(&mut self) -> u64 {
        (10f64.powf(self.unit() * 6.0) * 100.0).round() as u64
    }
}

/// Event time of event `i` (ms).
pub fn time_of(i: u64) -> u64 {
    BASE_TIME_MS + i * INTER_EVENT_MS
}

/// The event whose time is `t` (the inverse of [`time_of`]).
pub fn index_of(t: u64) -> u64 {
    (t - BASE_TIME_MS) / INTER_EVENT_MS
}

/// The last person id (0-based) created at or before event `i`.
fn last_base0_person_id(i: u64) -> u64 {
    let epoch = i / TOTAL_PROPORTION;
    let mut offset = i % TOTAL_PROPORTION;
    if offset >= PERSON_PROPORTION {
        offset = PERSON_PROPORTION - 1;
    }
    epoch * PERSON_PROPORTION + offset
}

/// The last auction id (0-based) created at or before event `i` (0 before the first).
fn last_base0_auction_id(i: u64) -> u64 {
    let mut epoch = i / TOTAL_PROPORTION;
    let mut offset = i % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// A person among the active ones (or one of the next few to be created).
fn next_base0_person_id(i: u64, r: &mut Rng) -> u64 {
    let num_people = last_base0_person_id(i) + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    num_people - active + r.below(active + PERSON_ID_LEAD)
}

/// An auction among the in-flight ones (or one of the next few to be created).
fn next_base0_auction_id(i: u64, r: &mut Rng) -> u64 {
    let max = last_base0_auction_id(i);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + r.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// Event `i` of the stream seeded `seed`.
pub fn event(seed: u64, i: u64) -> Event {
    let mut r = Rng::for_event(seed, i);
    let t = time_of(i);
    let offset = i % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        let id = last_base0_person_id(i) + FIRST_PERSON_ID;
        let name = format!("{} {}", r.pick(&FIRST_NAMES), r.pick(&LAST_NAMES));
        let email_address = format!("{}@{}.com", r.word(7), r.word(5));
        let credit_card =
            format!("{:04} {:04} {:04} {:04}", r.below(10_000), r.below(10_000), r.below(10_000), r.below(10_000));
        let city = r.pick(&US_CITIES).to_owned();
        let state = r.pick(&US_STATES).to_owned();
        Event::Person(Person { id, name, email_address, credit_card, city, state, date_time: t })
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        let id = last_base0_auction_id(i) + FIRST_AUCTION_ID;
        let seller = if r.below(HOT_SELLERS) > 0 {
            (last_base0_person_id(i) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_base0_person_id(i, &mut r)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + r.below(NUM_CATEGORIES);
        let initial_bid = r.price();
        let reserve = initial_bid + r.price();
        let expires = t + 1_000 + r.below(20_000);
        let item_name = r.word(10);
        let description = r.word(20);
        Event::Auction(Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: t,
            expires,
            seller,
            category,
        })
    } else {
        let auction = if r.below(HOT_AUCTIONS) > 0 {
            (last_base0_auction_id(i) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            next_base0_auction_id(i, &mut r)
        } + FIRST_AUCTION_ID;
        let bidder = if r.below(HOT_BIDDERS) > 0 {
            (last_base0_person_id(i) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            next_base0_person_id(i, &mut r)
        } + FIRST_PERSON_ID;
        let price = r.price();
        let channel = r.pick(&CHANNELS).to_owned();
        let url = format!("https://www.nexmark.com/{}/item.htm?query=1", r.word(5));
        Event::Bid(Bid { auction, bidder, price, channel, url, date_time: t })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_proportions_and_ids() {
        let evs: Vec<Event> = (0..5_000).map(|i| event(7, i)).collect();
        assert!(evs.iter().enumerate().all(|(i, e)| *e == event(7, i as u64)));
        assert_ne!(evs, (0..5_000).map(|i| event(8, i)).collect::<Vec<_>>());
        let persons = evs.iter().filter(|e| matches!(e, Event::Person(_))).count();
        let auctions = evs.iter().filter(|e| matches!(e, Event::Auction(_))).count();
        assert_eq!((persons, auctions, evs.len() - persons - auctions), (100, 300, 4_600));
        // Persons and auctions get consecutive ids in creation order.
        let pids: Vec<u64> =
            evs.iter().filter_map(|e| if let Event::Person(p) = e { Some(p.id) } else { None }).collect();
        assert!(pids.iter().copied().eq(FIRST_PERSON_ID..FIRST_PERSON_ID + 100));
        let aids: Vec<u64> =
            evs.iter().filter_map(|e| if let Event::Auction(a) = e { Some(a.id) } else { None }).collect();
        assert!(aids.iter().copied().eq(FIRST_AUCTION_ID..FIRST_AUCTION_ID + 300));
        assert!(evs.windows(2).all(|w| w[0].date_time() < w[1].date_time()));
    }
}
