#include "tunnel/socks5.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace dvpn::tunnel {
namespace {

using Bytes = std::vector<uint8_t>;
using Event = Socks5ServerParser::Event;

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes Str(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes Of(const Socks5ReplyBytes& r) { return Bytes(r.bytes().begin(), r.bytes().end()); }

// What a session would see after writing `input` to the parser in chunks of `chunk` bytes.
struct Outcome {
  Bytes replies;  // every kReply, concatenated
  std::optional<Socks5Errc> error;
  Bytes error_reply;
  bool request = false;
  Bytes leftover;  // bytes not consumed once the request completed
};

Outcome Drive(Socks5ServerParser& parser, const Bytes& input, size_t chunk) {
  Outcome out;
  Bytes pending;
  size_t next = 0;
  // Bounded: every round appends at least one byte or ends.
  while (true) {
    const size_t take = std::min(chunk, input.size() - next);
    pending.insert(pending.end(), input.begin() + next, input.begin() + next + take);
    next += take;
    while (true) {
      auto r = parser.Feed(pending);
      if (!r) {
        out.error = r.error().code;
        EXPECT_FALSE(r.error().message.empty());
        auto er = parser.error_reply();
        out.error_reply.assign(er.begin(), er.end());
        return out;
      }
      EXPECT_LE(r->consumed, pending.size());
      pending.erase(pending.begin(), pending.begin() + r->consumed);
      if (r->event == Event::kReply) {
        out.replies.insert(out.replies.end(), r->reply.begin(), r->reply.end());
        continue;
      }
      if (r->event == Event::kRequest) {
        out.request = true;
        out.leftover = pending;
        out.leftover.insert(out.leftover.end(), input.begin() + next, input.end());
        return out;
      }
      EXPECT_TRUE(pending.empty()) << "kNeedMore must consume everything";
      break;
    }
    if (next == input.size()) return out;
  }
}

Socks5ServerOptions NoAuth() { return Socks5ServerOptions{}; }

Socks5ServerOptions UserPass(bool allow_no_auth = false) {
  Socks5ServerOptions o;
  o.allow_no_auth = allow_no_auth;
  o.check_credentials = [](std::string_view u, std::string_view p) {
    return u == "alice" && p == "s3cret";
  };
  return o;
}

const Bytes kGreetNoAuth = {0x05, 0x01, 0x00};
const Bytes kConnectV4 = {0x05, 0x01, 0x00, 0x01, 93, 184, 216, 34, 0x01, 0xBB};  // :443
const Bytes kAuthAlice = Cat({{0x01, 5}, Str("alice"), {6}, Str("s3cret")});

// Each conversation is checked in 1-byte pieces, in a few odd sizes and all at once.
const size_t kChunks[] = {1, 2, 3, 7, 1000};

TEST(Socks5, NoAuthConnectIpv4) {
  for (size_t chunk : kChunks) {
    Socks5ServerParser p(NoAuth());
    auto o = Drive(p, Cat({kGreetNoAuth, kConnectV4}), chunk);
    ASSERT_FALSE(o.error) << "chunk " << chunk;
    ASSERT_TRUE(o.request);
    EXPECT_EQ(o.replies, (Bytes{0x05, 0x00}));
    EXPECT_TRUE(o.leftover.empty());
    EXPECT_TRUE(p.done());
    EXPECT_EQ(p.request().kind, Destination::Kind::kIpv4);
    EXPECT_EQ(p.request().v4, (std::array<uint8_t, 4>{93, 184, 216, 34}));
    EXPECT_EQ(p.request().port, 443);
    EXPECT_TRUE(p.user().empty());
  }
}

TEST(Socks5, ConnectIpv6AndDomain) {
  Bytes v6 = {0x05, 0x01, 0x00, 0x04};
  for (int i = 0; i < 16; ++i) v6.push_back(static_cast<uint8_t>(0x20 + i));
  v6.push_back(0x00);
  v6.push_back(0x50);
  const Bytes domain = Cat({{0x05, 0x01, 0x00, 0x03, 11}, Str("example.com"), {0x1F, 0x90}});
  for (size_t chunk : kChunks) {
    Socks5ServerParser p6(NoAuth());
    auto o6 = Drive(p6, Cat({kGreetNoAuth, v6}), chunk);
    ASSERT_TRUE(o6.request) << "chunk " << chunk;
    EXPECT_EQ(p6.request().kind, Destination::Kind::kIpv6);
    EXPECT_EQ(p6.request().v6[0], 0x20);
    EXPECT_EQ(p6.request().v6[15], 0x2F);
    EXPECT_EQ(p6.request().port, 80);

    Socks5ServerParser pd(NoAuth());
    auto od = Drive(pd, Cat({kGreetNoAuth, domain}), chunk);
    ASSERT_TRUE(od.request);
    EXPECT_EQ(pd.request().kind, Destination::Kind::kDomain);
    EXPECT_EQ(pd.request().domain, "example.com");
    EXPECT_EQ(pd.request().port, 8080);
  }
}

TEST(Socks5, LongestMessages) {
  // 255 methods, 255-byte credentials, a 255-byte domain: the bounds, accepted.
  Bytes greet = {0x05, 0xFF};
  for (int i = 0; i < 255; ++i) greet.push_back(static_cast<uint8_t>(i == 200 ? 0x02 : 0x80));
  const std::string user(255, 'u'), pass(255, 'p');
  const Bytes auth = Cat({{0x01, 255}, Str(user), {255}, Str(pass)});
  const std::string name(255, 'a');
  const Bytes req = Cat({{0x05, 0x01, 0x00, 0x03, 255}, Str(name), {0x00, 0x16}});
  for (size_t chunk : kChunks) {
    Socks5ServerOptions o;
    o.allow_no_auth = false;
    int calls = 0;
    o.check_credentials = [&](std::string_view u, std::string_view pw) {
      ++calls;
      return u == user && pw == pass;
    };
    Socks5ServerParser p(std::move(o));
    auto out = Drive(p, Cat({greet, auth, req}), chunk);
    ASSERT_TRUE(out.request) << "chunk " << chunk;
    EXPECT_EQ(out.replies, (Bytes{0x05, 0x02, 0x01, 0x00}));
    EXPECT_EQ(p.request().domain, name);
    EXPECT_EQ(p.request().port, 22);
    EXPECT_EQ(p.user(), user);
    EXPECT_EQ(calls, 1);
  }
}

TEST(Socks5, UserPassSuccess) {
  for (size_t chunk : kChunks) {
    Socks5ServerParser p(UserPass());
    auto o = Drive(p, Cat({{0x05, 0x02, 0x00, 0x02}, kAuthAlice, kConnectV4}), chunk);
    ASSERT_FALSE(o.error) << "chunk " << chunk;
    ASSERT_TRUE(o.request);
    EXPECT_EQ(o.replies, (Bytes{0x05, 0x02, 0x01, 0x00}));
    EXPECT_EQ(p.user(), "alice");
  }
}

TEST(Socks5, UserPassFailure) {
  const Bytes wrong = Cat({{0x01, 5}, Str("alice"), {6}, Str("s3cre7")});
  for (size_t chunk : kChunks) {
    Socks5ServerParser p(UserPass());
    auto o = Drive(p, Cat({{0x05, 0x01, 0x02}, wrong, kConnectV4}), chunk);
    EXPECT_EQ(o.error, Socks5Errc::kAuthFailed) << "chunk " << chunk;
    EXPECT_EQ(o.replies, (Bytes{0x05, 0x02}));
    EXPECT_EQ(o.error_reply, (Bytes{0x01, 0x01}));
    EXPECT_FALSE(o.request);
    EXPECT_TRUE(p.user().empty());
    // Nothing more is accepted after an error.
    auto again = p.Feed(kConnectV4);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, Socks5Errc::kBadState);
  }
}

TEST(Socks5, MalformedCredentials) {
  struct Case {
    Bytes auth;
    Socks5Errc code;
  } cases[] = {
      {{0x05, 5}, Socks5Errc::kBadVersion},              // sub-negotiation VER 5
      {{0x01, 0, 1, 'x'}, Socks5Errc::kBadCredentials},  // ULEN 0
      {{0x01, 1, 'x', 0}, Socks5Errc::kBadCredentials},  // PLEN 0
  };
  for (const auto& c : cases) {
    for (size_t chunk : kChunks) {
      Socks5ServerParser p(UserPass());
      auto o = Drive(p, Cat({{0x05, 0x01, 0x02}, c.auth}), chunk);
      EXPECT_EQ(o.error, c.code);
      EXPECT_EQ(o.error_reply, (Bytes{0x01, 0x01}));
    }
  }
}

TEST(Socks5, MethodSelection) {
  struct Case {
    Socks5ServerOptions options;
    Bytes greeting;
    std::optional<uint8_t> method;  // nullopt: FF and kNoAcceptableMethod
  };
  Socks5ServerOptions none;
  none.allow_no_auth = false;
  std::vector<Case> cases;
  cases.push_back({NoAuth(), {0x05, 0x01, 0x00}, 0x00});
  cases.push_back({NoAuth(), {0x05, 0x02, 0x02, 0x00}, 0x00});  // 02 offered, not configured
  cases.push_back({NoAuth(), {0x05, 0x01, 0x02}, std::nullopt});
  cases.push_back({NoAuth(), {0x05, 0x02, 0x01, 0x80}, std::nullopt});  // GSSAPI, private
  cases.push_back({UserPass(false), {0x05, 0x01, 0x00}, std::nullopt});
  cases.push_back({UserPass(false), {0x05, 0x02, 0x00, 0x02}, 0x02});
  cases.push_back({UserPass(true), {0x05, 0x01, 0x00}, 0x00});
  cases.push_back({UserPass(true), {0x05, 0x02, 0x00, 0x02}, 0x02});  // credentials preferred
  cases.push_back({none, {0x05, 0x02, 0x00, 0x02}, std::nullopt});
  for (auto& c : cases) {
    Socks5ServerParser p(std::move(c.options));
    auto r = p.Feed(c.greeting);
    if (c.method) {
      ASSERT_TRUE(r);
      EXPECT_EQ(r->event, Event::kReply);
      EXPECT_EQ(r->consumed, c.greeting.size());
      EXPECT_EQ(Bytes(r->reply.begin(), r->reply.end()), (Bytes{0x05, *c.method}));
    } else {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error().code, Socks5Errc::kNoAcceptableMethod);
      EXPECT_EQ(Bytes(p.error_reply().begin(), p.error_reply().end()), (Bytes{0x05, 0xFF}));
    }
  }
}

// The IPv4 CONNECT request with its byte `index` set to each of `values`, in every chunking, is
// refused with `errc` and a reply of code `rep`.
void ExpectRequestByteRefused(size_t index, std::initializer_list<uint8_t> values,
                              Socks5Errc errc, uint8_t rep) {
  for (uint8_t value : values) {
    for (size_t chunk : kChunks) {
      Socks5ServerParser p(NoAuth());
      Bytes req = kConnectV4;
      req[index] = value;
      auto o = Drive(p, Cat({kGreetNoAuth, req}), chunk);
      EXPECT_EQ(o.error, errc) << "byte " << index << " = " << int(value) << ", chunk " << chunk;
      EXPECT_EQ(o.error_reply, (Bytes{0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0}));
    }
  }
}

TEST(Socks5, UnsupportedCommands) {
  // BIND, UDP ASSOCIATE, unknown.
  ExpectRequestByteRefused(1, {0x02, 0x03, 0x00, 0x09, 0xFF}, Socks5Errc::kUnsupportedCommand,
                           0x07);
}

TEST(Socks5, UnsupportedAddressType) {
  ExpectRequestByteRefused(3, {0x00, 0x02, 0x05, 0xFF}, Socks5Errc::kUnsupportedAddress, 0x08);
}

TEST(Socks5, BadDomain) {
  const Bytes empty = {0x05, 0x01, 0x00, 0x03, 0, 0x00, 0x50};
  const Bytes nul = Cat({{0x05, 0x01, 0x00, 0x03, 7}, Str("evil"), {0x00}, Str("co"), {0, 80}});
  for (const Bytes& req : {empty, nul}) {
    for (size_t chunk : kChunks) {
      Socks5ServerParser p(NoAuth());
      auto o = Drive(p, Cat({kGreetNoAuth, req}), chunk);
      EXPECT_EQ(o.error, Socks5Errc::kBadDomain);
      EXPECT_EQ(o.error_reply, (Bytes{0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0}));
    }
  }
}

TEST(Socks5, GarbageGreeting) {
  struct Case {
    Bytes input;
    Socks5Errc code;
    Bytes reply;
  } cases[] = {
      {Str("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Socks5Errc::kBadVersion, {}},
      {{0x04, 0x01, 0x00, 0x50, 1, 2, 3, 4, 0}, Socks5Errc::kBadVersion, {}},  // SOCKS4
      {{0x16, 0x03, 0x01}, Socks5Errc::kBadVersion, {}},                       // TLS
      {{0x05, 0x00}, Socks5Errc::kNoMethods, {0x05, 0xFF}},
  };
  for (const auto& c : cases) {
    for (size_t chunk : kChunks) {
      Socks5ServerParser p(NoAuth());
      auto o = Drive(p, c.input, chunk);
      EXPECT_EQ(o.error, c.code);
      EXPECT_EQ(o.error_reply, c.reply);
    }
  }
}

TEST(Socks5, BadRequestVersion) {
  Socks5ServerParser p(NoAuth());
  Bytes req = kConnectV4;
  req[0] = 0x04;
  auto o = Drive(p, Cat({kGreetNoAuth, req}), 1);
  EXPECT_EQ(o.error, Socks5Errc::kBadVersion);
  EXPECT_EQ(o.error_reply, (Bytes{0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0}));
}

TEST(Socks5, TruncatedInputWaitsWithoutCompleting) {
  const Bytes all = Cat({{0x05, 0x01, 0x02}, kAuthAlice, kConnectV4});
  for (size_t n = 0; n < all.size(); ++n) {
    Socks5ServerParser p(UserPass());
    auto o = Drive(p, Bytes(all.begin(), all.begin() + n), 1);
    EXPECT_FALSE(o.error) << n;
    EXPECT_FALSE(o.request) << n;
    EXPECT_FALSE(p.done());
  }
}

TEST(Socks5, NeverConsumesPastTheRequest) {
  // A client may send its first payload right behind the request; it stays with the caller.
  const Bytes payload = Str("GET / HTTP/1.1\r\n\r\n");
  for (size_t chunk : kChunks) {
    Socks5ServerParser p(NoAuth());
    auto o = Drive(p, Cat({kGreetNoAuth, kConnectV4, payload}), chunk);
    ASSERT_TRUE(o.request);
    EXPECT_EQ(o.leftover, payload);
  }
  // Oversized input in one call: only the greeting is taken.
  Socks5ServerParser p(NoAuth());
  Bytes big = Cat({kGreetNoAuth, Bytes(100000, 0x05)});
  auto r = p.Feed(big);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->consumed, kGreetNoAuth.size());
  EXPECT_EQ(r->event, Event::kReply);
}

TEST(Socks5, FeedAfterRequestIsAnError) {
  Socks5ServerParser p(NoAuth());
  auto o = Drive(p, Cat({kGreetNoAuth, kConnectV4}), 1000);
  ASSERT_TRUE(o.request);
  auto r = p.Feed(kConnectV4);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Socks5Errc::kBadState);
  EXPECT_EQ(p.request().port, 443);  // the request stays readable
}

TEST(Socks5, EmptyFeedNeedsMore) {
  Socks5ServerParser p(NoAuth());
  auto r = p.Feed({});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->consumed, 0u);
  EXPECT_EQ(r->event, Event::kNeedMore);
}

TEST(Socks5, RandomGarbageTerminates) {
  std::mt19937 rng(12345);
  for (int iter = 0; iter < 2000; ++iter) {
    Bytes input(rng() % 600);
    for (auto& b : input) b = static_cast<uint8_t>(rng());
    if (!input.empty() && iter % 2 == 0) input[0] = 0x05;  // reach deeper states
    if (input.size() > 2 && iter % 4 == 0) input[1] = static_cast<uint8_t>(rng() % 4);
    Socks5ServerParser p(iter % 3 == 0 ? UserPass(true) : NoAuth());
    auto o = Drive(p, input, 1 + rng() % 17);
    if (o.request) {
      EXPECT_LE(o.leftover.size(), input.size());
    }
  }
}

// Replies, byte-exact per RFC 1928 section 6.
TEST(Socks5Replies, Success) {
  Destination v4;
  v4.kind = Destination::Kind::kIpv4;
  v4.v4 = {127, 0, 0, 1};
  v4.port = 8080;
  EXPECT_EQ(Of(EncodeSocks5Success(v4)), (Bytes{0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0x1F, 0x90}));

  Destination v6;
  v6.kind = Destination::Kind::kIpv6;
  v6.v6 = {};
  v6.v6[15] = 1;
  v6.port = 443;
  auto r6 = EncodeSocks5Success(v6);
  Bytes want6 = {0x05, 0x00, 0x00, 0x04};
  for (int i = 0; i < 15; ++i) want6.push_back(0);
  want6.insert(want6.end(), {0x01, 0x01, 0xBB});
  EXPECT_EQ(Bytes(r6.bytes().begin(), r6.bytes().end()), want6);

  Destination dom;
  dom.kind = Destination::Kind::kDomain;
  dom.domain = "a.io";
  dom.port = 1;
  auto rd = EncodeSocks5Success(dom);
  EXPECT_EQ(Bytes(rd.bytes().begin(), rd.bytes().end()),
            (Bytes{0x05, 0x00, 0x00, 0x03, 4, 'a', '.', 'i', 'o', 0x00, 0x01}));

  dom.domain = std::string(256, 'x');  // cannot be encoded: falls back to 0.0.0.0
  auto rl = EncodeSocks5Success(dom);
  EXPECT_EQ(Bytes(rl.bytes().begin(), rl.bytes().end()),
            (Bytes{0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x01}));
  dom.domain = std::string(255, 'x');
  EXPECT_EQ(EncodeSocks5Success(dom).size(), kSocks5MaxReply);
}

TEST(Socks5Replies, FailureFromOpenFailure) {
  struct Case {
    OpenFailure failure;
    uint8_t rep;
  } cases[] = {
      {OpenFailure::kGeneral, 0x01},
      {OpenFailure::kNotAllowed, 0x02},
      {OpenFailure::kNetworkUnreachable, 0x03},
      {OpenFailure::kHostUnreachable, 0x04},
      {OpenFailure::kRefused, 0x05},
      {OpenFailure::kTtlExpired, 0x06},
      {OpenFailure::kCommandNotSupported, 0x07},
      {OpenFailure::kAddressTypeNotSupported, 0x08},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(static_cast<uint8_t>(Socks5ReplyFor(c.failure)), c.rep);
    auto r = EncodeSocks5Failure(c.failure);
    EXPECT_EQ(Bytes(r.bytes().begin(), r.bytes().end()),
              (Bytes{0x05, c.rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0}));
  }
}

}  // namespace
}  // namespace dvpn::tunnel
