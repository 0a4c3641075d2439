#pragma once
// Where clients reach a seller's tunnel: the `[offer] endpoints` (or `--endpoint`) as the seller
// wrote them, names allowed, turned into what a signed offer carries: IP addresses only
// (docs/node.md "Endpoints: names are resolved by the seller").
//
// Why the seller resolves and the client never does: a client then needs no DNS to reach its
// provider (a kill switch may block DNS while the tunnel is down), and no lookup tells a
// resolver which provider it chose. A seller on a dynamic address writes its name: each
// re-published version of the offer carries the address the name has then.
//
// Rules, per configured endpoint:
//   - an IPv4 or IPv6 literal is kept as written, except a wildcard (0.0.0.0, ::): refused;
//   - a name is looked up; its first IPv4 and first IPv6 address are kept (a name with many A
//     records would otherwise fill the offer's 4 slots);
//   - a name that resolves to a loopback address is refused unless `allow_loopback` (the tunnel
//     listens on loopback: a local network) or the name is "localhost" (loopback on purpose):
//     the Debian hostname trap (127.0.1.1 in /etc/hosts) would advertise an address no client
//     can reach;
//   - a name that does not resolve within `timeout` is refused.
// The result has no duplicate and at most marketplace::kMaxEndpoints entries, in configured
// order.
//
// Thread-safety: free functions; SystemLookup may be called from any thread.

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "marketplace/offer.h"
#include "provider/errc.h"

namespace dvpn::node {

// A name's addresses, in the resolver's order. Error kBadEndpoint: why it has none (one line).
using HostLookup = std::function<Result<std::vector<boost::asio::ip::address>, Errc>(
    const std::string& name)>;

// getaddrinfo(3) on a thread of its own, waited for at most `timeout`: a DNS server that does
// not answer delays the caller by `timeout`, not by the resolver's retries.
HostLookup SystemLookup(std::chrono::milliseconds timeout = std::chrono::seconds(5));

// The rules above. Error kBadEndpoint: "HOST: why" for the first endpoint refused.
Result<std::vector<marketplace::Endpoint>, Errc> ResolveEndpoints(
    const std::vector<marketplace::Endpoint>& configured, bool allow_loopback,
    const HostLookup& lookup);

// True for 127.0.0.0/8, ::1 and "localhost": a tunnel listening there serves this machine only.
bool IsLoopbackHost(const std::string& host);

// True when some host in `endpoints` is a name (not an IP literal): its address may change.
bool HasNames(const std::vector<marketplace::Endpoint>& endpoints);

// "a:1, b:2" for logs.
std::string Describe(const std::vector<marketplace::Endpoint>& endpoints);

}  // namespace dvpn::node
