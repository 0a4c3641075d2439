#include "provider/endpoints.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <thread>

namespace dvpn::node {
namespace {

namespace ip = boost::asio::ip;

std::optional<ip::address> Literal(const std::string& host) {
  boost::system::error_code ec;
  auto address = ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return address;
}

using LookupResult = Result<std::vector<ip::address>, Errc>;

LookupResult GetAddrInfo(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(name.c_str(), nullptr, &hints, &list);
  if (rc != 0) return Fail(Errc::kBadEndpoint, ::gai_strerror(rc));
  std::vector<ip::address> out;
  for (const addrinfo* a = list; a != nullptr; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
      ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &sin->sin_addr, b.size());
      out.push_back(ip::address_v4(b));
    } else if (a->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a->ai_addr);
      ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &sin6->sin6_addr, b.size());
      out.push_back(ip::address_v6(b));
    }
  }
  ::freeaddrinfo(list);
  if (out.empty()) return Fail(Errc::kBadEndpoint, "no IPv4 or IPv6 address");
  return out;
}

}  // namespace

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  auto address = Literal(host);
  return address && address->is_loopback();
}

bool HasNames(const std::vector<marketplace::Endpoint>& endpoints) {
  return std::any_of(endpoints.begin(), endpoints.end(),
                     [](const marketplace::Endpoint& e) { return !Literal(e.host); });
}

std::string Describe(const std::vector<marketplace::Endpoint>& endpoints) {
  std::string out;
  for (const auto& e : endpoints) out += (out.empty() ? "" : ", ") + e.ToString();
  return out;
}

HostLookup SystemLookup(std::chrono::milliseconds timeout) {
  return [timeout](const std::string& name) -> LookupResult {
    // The lookup thread owns its promise: when the wait below gives up, the thread finishes
    // (the resolver's own timeout ends it) and its result is dropped.
    auto promise = std::make_shared<std::promise<LookupResult>>();
    auto future = promise->get_future();
    std::thread([promise, name] { promise->set_value(GetAddrInfo(name)); }).detach();
    if (future.wait_for(timeout) != std::future_status::ready) {
      return Fail(Errc::kBadEndpoint, "no answer from the resolver within " +
                                          std::to_string(timeout.count()) + " ms");
    }
    return future.get();
  };
}

Result<std::vector<marketplace::Endpoint>, Errc> ResolveEndpoints(
    const std::vector<marketplace::Endpoint>& configured, bool allow_loopback,
    const HostLookup& lookup) {
  std::vector<marketplace::Endpoint> out;
  auto add = [&out](const ip::address& address, uint16_t port) {
    marketplace::Endpoint e{address.to_string(), port};
    if (out.size() < marketplace::kMaxEndpoints && std::find(out.begin(), out.end(), e) == out.end())
      out.push_back(std::move(e));
  };
  for (const auto& e : configured) {
    if (auto literal = Literal(e.host)) {
      if (literal->is_unspecified()) {
        return Fail(Errc::kBadEndpoint,
                    e.host + ": a wildcard address; clients need the address they can reach");
      }
      add(*literal, e.port);
      continue;
    }
    auto found = lookup(e.host);
    if (!found) {
      return Fail(Errc::kBadEndpoint, e.host + ": cannot resolve: " + found.error().message);
    }
    std::optional<ip::address> v4, v6;
    for (const auto& a : *found) {
      if (a.is_v4() && !v4) v4 = a;
      if (a.is_v6() && !v6) v6 = a;
    }
    for (const auto& a : {v4, v6}) {
      if (!a) continue;
      if (a->is_unspecified()) {
        return Fail(Errc::kBadEndpoint,
                    e.host + ": resolves to the wildcard address " + a->to_string());
      }
      if (a->is_loopback() && !allow_loopback && e.host != "localhost") {
        return Fail(Errc::kBadEndpoint, e.host + ": resolves to " + a->to_string() +
                                            " (loopback), which no other machine can reach; "
                                            "write the address or name clients use");
      }
      add(*a, e.port);
    }
  }
  if (out.empty()) return Fail(Errc::kBadEndpoint, "no endpoint");
  return out;
}

}  // namespace dvpn::node
