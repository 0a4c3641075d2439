#!/usr/bin/env python3
"""An independent implementation of docs/protocol.md (encodings, addresses, ids) and of BIP-340
signing and verification, in standard-library Python, written from the documents alone. It
recomputes every test vector of docs/protocol.md and exits non-zero on the first mismatch, so the
document is proven sufficient for a wallet in another language.

Usage: independent_vectors.py path/to/docs/protocol.md
"""
import hashlib
import re
import sys

# --- BIP-340 over secp256k1 (affine arithmetic; slow but simple and enough for a few vectors) ---
P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
     0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)


def point_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and a[1] != b[1]:
        return None
    if a == b:
        lam = 3 * a[0] * a[0] * pow(2 * a[1], P - 2, P) % P
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], P - 2, P) % P
    x = (lam * lam - a[0] - b[0]) % P
    return (x, (lam * (a[0] - x) - a[1]) % P)


def point_mul(pt, k):
    result = None
    for i in range(256):
        if (k >> i) & 1:
            result = point_add(result, pt)
        pt = point_add(pt, pt)
    return result


def tagged_hash(tag, msg):
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + msg).digest()


def int32(b):
    return int.from_bytes(b, "big")


def b32(x):
    return x.to_bytes(32, "big")


def lift_x(x):
    if x >= P:
        return None
    y_sq = (pow(x, 3, P) + 7) % P
    y = pow(y_sq, (P + 1) // 4, P)
    if pow(y, 2, P) != y_sq:
        return None
    return (x, y if y % 2 == 0 else P - y)


def pubkey(sk):
    return b32(point_mul(G, int32(sk))[0])


def sign(sk, msg, aux):
    d0 = int32(sk)
    pt = point_mul(G, d0)
    d = d0 if pt[1] % 2 == 0 else N - d0
    t = bytes(a ^ b for a, b in zip(b32(d), tagged_hash("BIP0340/aux", aux)))
    k0 = int32(tagged_hash("BIP0340/nonce", t + b32(pt[0]) + msg)) % N
    r = point_mul(G, k0)
    k = k0 if r[1] % 2 == 0 else N - k0
    e = int32(tagged_hash("BIP0340/challenge", b32(r[0]) + b32(pt[0]) + msg)) % N
    return b32(r[0]) + b32((k + e * d) % N)


def verify(pk, msg, sig):
    pt = lift_x(int32(pk))
    r, s = int32(sig[:32]), int32(sig[32:])
    if pt is None or r >= P or s >= N:
        return False
    e = int32(tagged_hash("BIP0340/challenge", sig[:32] + pk + msg)) % N
    big_r = point_add(point_mul(G, s), point_mul(pt, N - e))
    return big_r is not None and big_r[1] % 2 == 0 and big_r[0] == r


# --- docs/protocol.md, sections 1-3 ---
def sha256(b):
    return hashlib.sha256(b).digest()


def tag(s):
    return bytes([len(s)]) + s.encode()


def u16(v):
    return v.to_bytes(2, "big")


def u32(v):
    return v.to_bytes(4, "big")


def u64(v):
    return v.to_bytes(8, "big")


def str16(s):
    return u16(len(s.encode())) + s.encode()


def address(pk):
    return sha256(tag("dvpn.v1.Address") + pk)[:20]


def address_text(addr):
    return "dv" + (addr + sha256(addr)[:4]).hex()


def main():
    doc = open(sys.argv[1], encoding="utf-8").read()
    block = doc.split("<!-- vectors:begin -->")[1].split("<!-- vectors:end -->")[0]
    vectors = dict(re.findall(r"^([\w.]+) = ([0-9a-z]+)$", block, re.M))

    sk_op, sk_cl, sk_pr = bytes([0x11]) * 32, bytes([0x22]) * 32, bytes([0x33]) * 32
    pk_op, pk_cl, pk_pr = pubkey(sk_op), pubkey(sk_cl), pubkey(sk_pr)
    a_cl, a_pr = address(pk_cl), address(pk_pr)
    ledger = sha256(tag("dvpn.v1.LedgerId") + str16("dvpn-test") + pk_op)
    channel = sha256(tag("dvpn.v1.ChannelId") + ledger + a_cl + u64(7))
    aux = bytes(32)

    def enc(t, body):
        return tag(t) + ledger + body

    promise_digest = sha256(enc("dvpn.v1.Promise", channel + u64(1234567)))
    promise_sig = sign(sk_cl, promise_digest, aux)
    messages = {
        "deposit": (sk_op, enc("dvpn.v1.Deposit", a_cl + u64(10000000) + u64(1))),
        "withdraw": (sk_pr, enc("dvpn.v1.Withdraw",
                                a_pr + u64(1500000) + u64(3) + str16("bank:DE00 1234"))),
        "open_channel": (sk_cl, enc("dvpn.v1.OpenChannel",
                                    a_cl + a_pr + u64(5000000) + u64(7) + u64(1900000000))),
        "topup_channel": (sk_cl, enc("dvpn.v1.TopUpChannel",
                                     channel + u64(1000000) + u64(8) + u64(1900003600))),
        "close_channel": (sk_cl, enc("dvpn.v1.CloseChannel", channel + a_cl + u64(9))),
        "promise": (sk_cl, enc("dvpn.v1.Promise", channel + u64(1234567))),
        "settle_batch": (sk_pr, enc("dvpn.v1.SettleBatch", a_pr + u64(4) + u32(1) + channel +
                                    u64(1234567) + promise_sig)),
    }

    expected = {
        "operator.pub": pk_op.hex(), "client.pub": pk_cl.hex(), "provider.pub": pk_pr.hex(),
        "operator.addr": address_text(address(pk_op)), "client.addr": address_text(a_cl),
        "provider.addr": address_text(a_pr), "ledger_id": ledger.hex(), "channel_id": channel.hex(),
    }
    for name, (sk, encoding) in messages.items():
        digest = sha256(encoding)
        expected[name + ".digest"] = digest.hex()
        expected[name + ".sig"] = sign(sk, digest, aux).hex()
        if not verify(pubkey(sk), digest, bytes.fromhex(vectors[name + ".sig"])):
            print(f"FAIL {name}.sig does not verify")
            return 1

    # Signed offers (docs/protocol.md §6): a block of its own, long values split over lines.
    offer_block = doc.split("<!-- offer-vectors:begin -->")[1].split("<!-- offer-vectors:end -->")[0]
    for name, part in re.findall(r"^([\w.]+) = ([0-9a-f]+)$", offer_block, re.M):
        vectors[name] = vectors.get(name, "") + part

    def u8(v):
        return bytes([v])

    def offer(seq, issued, expires, retired, tunnel_key, price_mb, capacity, sessions, region,
              endpoints, modes=None):
        # Format 1 (modes None): tag "dvpn.v1.Offer"; format 2: tag "dvpn.v1.Offer2", modes u8 last.
        out = (tag("dvpn.v1.Offer" if modes is None else "dvpn.v1.Offer2") + ledger + pk_pr +
               u32(1) + u64(seq) + u64(issued) +
               u64(expires) + u8(retired) + tunnel_key + u64(price_mb) + u64(0) +
               u32(capacity) + u32(sessions) + str16(region) + u8(len(endpoints)))
        for host, port in endpoints:
            out += str16(host) + u16(port)
        if modes is not None:
            out += u8(modes)
        return out

    offers = {
        "offer": offer(5, 1900000000, 1900003600, 0, bytes([0xA4]) * 32, 250000, 800, 64,
                       "eu-west", [("exit1.example.net", 7443), ("192.0.2.7", 7443)]),
        "offer2": offer(5, 1900000000, 1900003600, 0, bytes([0xA4]) * 32, 250000, 800, 64,
                        "eu-west", [("exit1.example.net", 7443), ("192.0.2.7", 7443)], modes=3),
        "retired": offer(6, 1900000100, 1900003700, 1, bytes(32), 0, 0, 0, "", []),
    }
    for name, encoding in offers.items():
        digest = sha256(encoding)
        expected[name + ".encoding"] = encoding.hex()
        expected[name + ".digest"] = digest.hex()
        expected[name + ".sig"] = sign(sk_pr, digest, aux).hex()
    expected["offer.key"] = sha256(tag("dvpn.v1.OfferKey") + pk_pr + u32(1))[:8].hex()

    failed = 0
    for name, value in expected.items():
        if vectors.get(name) != value:
            print(f"FAIL {name}: document {vectors.get(name)} computed {value}")
            failed += 1
    print(f"{len(expected) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
