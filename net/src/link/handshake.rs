//! The handshake that opens every connection of a link, before it carries anything: the nodes
//! check they run the same cluster config and prove to each other that they hold the cluster
//! secret ([`super::auth`]).
//!
//! ```text
//! dialer                                            acceptor
//!   Hello { fingerprint, from, to, epoch, nonce Nd, incarnation, running } ->
//!                                                   config and addressee checked
//!   <- Hello { fingerprint, from, to, epoch, nonce Na, incarnation, running }
//!                                                   (another config: answered, then closed)
//!   Proof { HMAC(dialer, Nd, Na), 0 } ->
//!                                                   checked: else Error { BadProof }, closed
//!                                                   the peer's incarnation met: a stale one
//!                                                   gets Error { Stale }, closed
//!                                                   only now may the connection replace the
//!                                                   peer's current one
//!   <- Proof { HMAC(acceptor, Nd, Na), next }
//! checked: else the connection is dropped
//! the peer's incarnation met: a stale one is dropped
//! ```
//!
//! The incarnations are not covered by the MACs (the transcript predates them), but each side
//! acts on the other's only after its proof checked, over a connection no one else can write
//! into; see [`super::Shared::meet`].
//!
//! The acceptor proves itself last, so it computes no MAC for a dialer that has not proven
//! itself first. A failed proof on either side is a fault of that one connection, retried like
//! a network fault: a forger cannot make a good node give up, nor displace its live link.

use std::io::Write;
use std::net::TcpStream;

use rkyv::util::AlignedVec;

use super::auth::{nonce, Role, Secret, Transcript};
use super::error::LinkFault;
use super::wire::{Hello, ProofFrame, Refusal};
use crate::{EncodeError, FrameDecoder, FrameType};

/// How a dialer's handshake failed.
#[derive(Debug)]
pub(crate) enum DialError {
    /// The acceptor runs another cluster config: its hello carries another fingerprint.
    OtherConfig,
    /// The connection, the peer's frames or its proof failed, or the peer refused this node.
    Fault(LinkFault),
}

impl From<LinkFault> for DialError {
    fn from(f: LinkFault) -> Self {
        DialError::Fault(f)
    }
}

/// What a node says of its own process in its hellos.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stamp {
    pub incarnation: u64,
    pub running: bool,
}

/// The dialer's side, on a fresh connection from node `me` to node `peer`: hello, answer the
/// acceptor's challenge, check its proof. Returns the next link sequence number the acceptor
/// expects, and the acceptor's hello.
pub(crate) fn dial(
    stream: &TcpStream,
    decoder: &mut FrameDecoder,
    secret: &Secret,
    fingerprint: u64,
    (me, peer): (u32, u32),
    stamp: Stamp,
) -> Result<(u64, Hello), DialError> {
    let epoch = crate::clock::epoch_unix_ns();
    let (incarnation, running) = (stamp.incarnation, stamp.running);
    let hello = Hello { fingerprint, from: me, to: peer, epoch, nonce: nonce(), incarnation, running };
    send(stream, |out| hello.encode(out))?;
    let challenge = Hello::decode(&read_frame(stream, decoder, FrameType::Hello)?).map_err(LinkFault::from)?;
    if challenge.fingerprint != fingerprint {
        return Err(DialError::OtherConfig);
    }
    let transcript = Transcript {
        fingerprint,
        dialer: me,
        acceptor: peer,
        dialer_nonce: hello.nonce,
        acceptor_nonce: challenge.nonce,
    };
    let mine = ProofFrame { proof: transcript.prove(secret, Role::Dialer), next: 0 };
    send(stream, |out| mine.encode(out))?;
    let theirs = ProofFrame::decode(&read_frame(stream, decoder, FrameType::Proof)?).map_err(LinkFault::from)?;
    transcript.verify(secret, Role::Acceptor, &theirs.proof).map_err(|_| LinkFault::BadProof)?;
    Ok((theirs.next, challenge))
}

/// How an acceptor's handshake failed before the dialer's proof.
#[derive(Debug)]
pub(crate) enum AcceptError {
    /// No hello: the connection or its first frame failed.
    Fault(LinkFault),
    /// A hello from another cluster config (answered with this node's, so the dialer can tell).
    OtherConfig { from: u32 },
    /// A hello to another node, or from a node this one has no link from.
    NotAddressed { from: u32, to: u32 },
}

/// The acceptor's side after the dialer's hello, its challenge sent: [`Challenged::verify`]
/// the dialer's proof, then [`Challenged::welcome`] it.
#[derive(Debug)]
pub(crate) struct Challenged {
    /// The dialer's hello: who it claims to be (not proven until [`Challenged::verify`]).
    pub hello: Hello,
    /// This node's epoch, as sent.
    pub epoch: u64,
    transcript: Transcript,
}

/// The acceptor's first step on a fresh connection to node `me`: read the dialer's hello, check
/// its config and addressee (`is_peer`: the node indices this node takes links from), and send
/// the challenge.
pub(crate) fn challenge(
    stream: &TcpStream,
    decoder: &mut FrameDecoder,
    fingerprint: u64,
    me: u32,
    is_peer: impl Fn(u32) -> bool,
    stamp: Stamp,
) -> Result<Challenged, AcceptError> {
    let frame = read_frame(stream, decoder, FrameType::Hello).map_err(AcceptError::Fault)?;
    let hello = Hello::decode(&frame).map_err(|e| AcceptError::Fault(e.into()))?;
    let epoch = crate::clock::epoch_unix_ns();
    let (incarnation, running) = (stamp.incarnation, stamp.running);
    let reply = Hello { fingerprint, from: me, to: hello.from, epoch, nonce: nonce(), incarnation, running };
    if hello.fingerprint != fingerprint {
        let _ = send(stream, |out| reply.encode(out));
        return Err(AcceptError::OtherConfig { from: hello.from });
    }
    if hello.to != me || !is_peer(hello.from) {
        let _ = send(stream, |out| Refusal::NotAddressed.encode(out));
        return Err(AcceptError::NotAddressed { from: hello.from, to: hello.to });
    }
    send(stream, |out| reply.encode(out)).map_err(AcceptError::Fault)?;
    let transcript = Transcript {
        fingerprint,
        dialer: hello.from,
        acceptor: me,
        dialer_nonce: hello.nonce,
        acceptor_nonce: reply.nonce,
    };
    Ok(Challenged { hello, epoch, transcript })
}

impl Challenged {
    /// Read the dialer's proof and check it. A proof that does not verify is refused (the
    /// dialer is told why) and is [`LinkFault::BadProof`].
    pub(crate) fn verify(
        &self,
        stream: &TcpStream,
        decoder: &mut FrameDecoder,
        secret: &Secret,
    ) -> Result<(), LinkFault> {
        let theirs = ProofFrame::decode(&read_frame(stream, decoder, FrameType::Proof)?)?;
        if self.transcript.verify(secret, Role::Dialer, &theirs.proof).is_err() {
            let _ = send(stream, |out| Refusal::BadProof.encode(out));
            return Err(LinkFault::BadProof);
        }
        Ok(())
    }

    /// After [`Challenged::verify`], when this node will not link with the dialer's
    /// incarnation: say so, and close.
    pub(crate) fn stale(&self, stream: &TcpStream) {
        let _ = send(stream, |out| Refusal::Stale.encode(out));
    }

    /// After [`Challenged::verify`]: prove this node to the dialer, and tell it `next`, the
    /// next link sequence number expected.
    pub(crate) fn welcome(&self, stream: &TcpStream, secret: &Secret, next: u64) -> Result<(), LinkFault> {
        let mine = ProofFrame { proof: self.transcript.prove(secret, Role::Acceptor), next };
        send(stream, |out| mine.encode(out))
    }
}

/// Encode one frame and write it.
fn send(stream: &TcpStream, encode: impl FnOnce(&mut AlignedVec) -> Result<(), EncodeError>) -> Result<(), LinkFault> {
    let mut out = AlignedVec::new();
    encode(&mut out).expect("a handshake frame encodes");
    Ok((&*stream).write_all(&out)?)
}

/// Read until one whole frame of type `want` arrives (handshakes only); a refusal (`Error`)
/// instead is [`LinkFault::Refused`].
pub(crate) fn read_frame(
    stream: &TcpStream,
    decoder: &mut FrameDecoder,
    want: FrameType,
) -> Result<Vec<u8>, LinkFault> {
    use std::io::Read;
    loop {
        if let Some(f) = decoder.next_frame()? {
            return match f.ty {
                ty if ty == want => Ok(f.payload.to_vec()),
                FrameType::Error => Err(LinkFault::Refused(Refusal::decode(f.payload)?)),
                got => Err(LinkFault::Unexpected { want: Some(want), got }),
            };
        }
        let window = decoder.recv_window(4096)?;
        let n = (&*stream).read(window)?;
        if n == 0 {
            return Err(LinkFault::ClosedInHandshake);
        }
        decoder.commit(n)?;
    }
}

#[cfg(test)]
mod tests {
    //! Both sides over loopback TCP, and an attacker that speaks the frames by hand.

    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::link::auth::{Nonce, Proof};

    const FINGERPRINT: u64 = 0xd1_61_60;
    /// Node 1 dials node 0.
    const DIALER: u32 = 1;
    const ACCEPTOR: u32 = 0;

    /// A connected pair: (dialer's end, acceptor's end).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dialer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (acceptor, _) = listener.accept().unwrap();
        for s in [&dialer, &acceptor] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        (dialer, acceptor)
    }

    /// The acceptor's whole side with `secret`, on its own thread: its verdict on the dialer.
    fn acceptor(stream: TcpStream, secret: Secret, next: u64) -> std::thread::JoinHandle<Result<Hello, LinkFault>> {
        std::thread::spawn(move || {
            let mut decoder = FrameDecoder::default();
            let c = match challenge(
                &stream,
                &mut decoder,
                FINGERPRINT,
                ACCEPTOR,
                |from| from == DIALER,
                Stamp::default(),
            ) {
                Ok(c) => c,
                Err(e) => panic!("challenge: {e:?}"),
            };
            c.verify(&stream, &mut decoder, &secret)?;
            c.welcome(&stream, &secret, next)?;
            Ok(c.hello)
        })
    }

    fn dialer(stream: &TcpStream, secret: &Secret) -> Result<u64, DialError> {
        dial(stream, &mut FrameDecoder::default(), secret, FINGERPRINT, (DIALER, ACCEPTOR), Stamp::default())
            .map(|(next, _)| next)
    }

    /// Send `hello` by hand; the acceptor's challenge.
    fn raw_hello(stream: &TcpStream, decoder: &mut FrameDecoder, hello: Hello) -> Hello {
        send(stream, |out| hello.encode(out)).unwrap();
        Hello::decode(&read_frame(stream, decoder, FrameType::Hello).unwrap()).unwrap()
    }

    /// Send `proof` by hand; what the acceptor answers.
    fn raw_proof(stream: &TcpStream, decoder: &mut FrameDecoder, proof: Proof) -> Result<Vec<u8>, LinkFault> {
        send(stream, |out| ProofFrame { proof, next: 0 }.encode(out)).unwrap();
        read_frame(stream, decoder, FrameType::Proof)
    }

    fn hello(nonce: Nonce) -> Hello {
        Hello { fingerprint: FINGERPRINT, from: DIALER, to: ACCEPTOR, epoch: 1, nonce, incarnation: 1, running: false }
    }

    #[test]
    fn the_same_secret_passes_both_ways() {
        let secret = Secret::random();
        let (d, a) = pair();
        let verdict = acceptor(a, secret.clone(), 42);
        assert_eq!(dialer(&d, &secret).unwrap(), 42, "the acceptor's next");
        assert_eq!(verdict.join().unwrap().unwrap().from, DIALER);
    }

    #[test]
    fn a_wrong_secret_is_refused_and_both_sides_say_why() {
        let (d, a) = pair();
        let verdict = acceptor(a, Secret::new(*b"right").unwrap(), 0);
        let err = dialer(&d, &Secret::new(*b"wrong").unwrap()).unwrap_err();
        assert!(matches!(err, DialError::Fault(LinkFault::Refused(Refusal::BadProof))), "{err:?}");
        assert!(matches!(verdict.join().unwrap(), Err(LinkFault::BadProof)));
    }

    #[test]
    fn a_replayed_proof_is_refused() {
        let secret = Secret::random();
        // A genuine dialer's first connection, recorded by an eavesdropper.
        let (d, a) = pair();
        let verdict = acceptor(a, secret.clone(), 0);
        let mut decoder = FrameDecoder::default();
        let recorded = hello(nonce());
        let challenge = raw_hello(&d, &mut decoder, recorded);
        let t = Transcript {
            fingerprint: FINGERPRINT,
            dialer: DIALER,
            acceptor: ACCEPTOR,
            dialer_nonce: recorded.nonce,
            acceptor_nonce: challenge.nonce,
        };
        let proof = t.prove(&secret, Role::Dialer);
        raw_proof(&d, &mut decoder, proof).expect("the genuine proof is accepted");
        verdict.join().unwrap().unwrap();
        // The eavesdropper replays the same hello and proof on a new connection: the acceptor's
        // fresh challenge makes the old proof worthless.
        let (d, a) = pair();
        let verdict = acceptor(a, secret, 0);
        let mut decoder = FrameDecoder::default();
        let fresh = raw_hello(&d, &mut decoder, recorded);
        assert_ne!(fresh.nonce, challenge.nonce, "a fresh challenge");
        let answer = raw_proof(&d, &mut decoder, proof);
        assert!(matches!(answer, Err(LinkFault::Refused(Refusal::BadProof))), "{answer:?}");
        assert!(matches!(verdict.join().unwrap(), Err(LinkFault::BadProof)));
    }

    #[test]
    fn a_reflected_challenge_is_refused() {
        // An attacker without the secret at the acceptor's address echoes the dialer's nonce
        // as its challenge, then sends the dialer's own proof back as its proof.
        let secret = Secret::random();
        let (d, a) = pair();
        let attacker = std::thread::spawn(move || {
            let mut decoder = FrameDecoder::default();
            let theirs = Hello::decode(&read_frame(&a, &mut decoder, FrameType::Hello).unwrap()).unwrap();
            let echo = Hello { from: ACCEPTOR, to: DIALER, nonce: theirs.nonce, ..theirs };
            send(&a, |out| echo.encode(out)).unwrap();
            let proof = ProofFrame::decode(&read_frame(&a, &mut decoder, FrameType::Proof).unwrap()).unwrap();
            send(&a, |out| ProofFrame { proof: proof.proof, next: 0 }.encode(out)).unwrap();
        });
        let err = dialer(&d, &secret).unwrap_err();
        assert!(matches!(err, DialError::Fault(LinkFault::BadProof)), "{err:?}");
        attacker.join().unwrap();
    }

    #[test]
    fn a_forger_learns_no_proof_from_the_acceptor() {
        // Without a valid proof of its own, a dialer gets a refusal, never the acceptor's proof
        // (which it could try to use elsewhere).
        let (d, a) = pair();
        let verdict = acceptor(a, Secret::random(), 0);
        let mut decoder = FrameDecoder::default();
        raw_hello(&d, &mut decoder, hello(nonce()));
        let answer = raw_proof(&d, &mut decoder, [0; 32]);
        assert!(matches!(answer, Err(LinkFault::Refused(Refusal::BadProof))), "{answer:?}");
        assert!(matches!(verdict.join().unwrap(), Err(LinkFault::BadProof)));
    }

    #[test]
    fn another_config_and_another_addressee_are_told_apart() {
        let (d, a) = pair();
        let acceptor = std::thread::spawn(move || {
            let r = challenge(&a, &mut FrameDecoder::default(), FINGERPRINT + 1, ACCEPTOR, |_| true, Stamp::default());
            matches!(r, Err(AcceptError::OtherConfig { from: DIALER }))
        });
        assert!(matches!(dialer(&d, &Secret::random()), Err(DialError::OtherConfig)));
        assert!(acceptor.join().unwrap());
        let (d, a) = pair();
        let acceptor = std::thread::spawn(move || {
            let r = challenge(&a, &mut FrameDecoder::default(), FINGERPRINT, ACCEPTOR, |_| false, Stamp::default());
            matches!(r, Err(AcceptError::NotAddressed { from: DIALER, to: ACCEPTOR }))
        });
        let err = dialer(&d, &Secret::random()).unwrap_err();
        assert!(matches!(err, DialError::Fault(LinkFault::Refused(Refusal::NotAddressed))), "{err:?}");
        assert!(acceptor.join().unwrap());
    }
}
