#include "tunnel/os/netlink.h"

// <net/if.h> before the kernel headers: glibc's and linux/if.h's IFF_* clash the other way round.
#include <net/if.h>

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/ip.h>
#include <linux/rtnetlink.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <utility>
#include <vector>

namespace dvpn::tunnel::os {

namespace {

// Requests are small; answers to RTM_GETROUTE hold one route. MNL_SOCKET_BUFFER_SIZE (the page
// size, at most 8 KiB) is what libmnl recommends for reading.
constexpr size_t kBufferSize = 8192;

mnl_socket* Sock(void* s) { return static_cast<mnl_socket*>(s); }

uint8_t FamilyOf(const IpAddress& a) {
  return a.family == IpAddress::Family::kV4 ? AF_INET : AF_INET6;
}
size_t SizeOf(const IpAddress& a) { return a.family == IpAddress::Family::kV4 ? 4 : 16; }
uint8_t MaxLength(const IpAddress& a) { return AddressBits(a); }

std::optional<IpAddress> AddressFrom(uint8_t family, const void* data, size_t size) {
  if (family == AF_INET && size == 4) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), data, 4);
    return IpAddress::V4(b);
  }
  if (family == AF_INET6 && size == 16) {
    std::array<uint8_t, 16> b{};
    std::memcpy(b.data(), data, 16);
    return IpAddress::V6(b);
  }
  return std::nullopt;
}

}  // namespace

OsResult<Netlink> Netlink::Open() {
  mnl_socket* s = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (!s) return FailFromErrno(errno, "netlink socket");
  if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
    const int err = errno;
    mnl_socket_close(s);
    return FailFromErrno(err, "netlink bind");
  }
  // Ask for extended acknowledgements: the kernel then says which attribute it refused.
  int one = 1;
  (void)mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &one, sizeof one);
  // Replies are read with a deadline, so a kernel that never answered cannot hang the caller.
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  (void)::setsockopt(mnl_socket_get_fd(s), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return Netlink(s, mnl_socket_get_portid(s));
}

Netlink::Netlink(Netlink&& other) noexcept
    : socket_(std::exchange(other.socket_, nullptr)), port_(other.port_), seq_(other.seq_) {}

Netlink& Netlink::operator=(Netlink&& other) noexcept {
  if (this != &other) {
    if (socket_) mnl_socket_close(Sock(socket_));
    socket_ = std::exchange(other.socket_, nullptr);
    port_ = other.port_;
    seq_ = other.seq_;
  }
  return *this;
}

Netlink::~Netlink() {
  if (socket_) mnl_socket_close(Sock(socket_));
}

namespace {

// One request being built in a buffer of its own.
struct Request {
  alignas(nlmsghdr) char buf[kBufferSize];
  nlmsghdr* nlh;
  Request(uint16_t type, uint16_t flags, uint32_t seq) {
    std::memset(buf, 0, sizeof buf);
    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    nlh->nlmsg_seq = seq;
  }
};

struct ReplyContext {
  uint16_t reply_type;
  std::vector<uint8_t>* reply;
};

int OnMessage(const nlmsghdr* nlh, void* data) {
  auto* ctx = static_cast<ReplyContext*>(data);
  if (ctx->reply_type != 0 && nlh->nlmsg_type == ctx->reply_type) {
    const auto* begin = reinterpret_cast<const uint8_t*>(nlh);
    ctx->reply->assign(begin, begin + nlh->nlmsg_len);
  }
  return MNL_CB_OK;
}

// Sends `req` and reads until the kernel's acknowledgement (or, for a GET, its answer). Returns
// the answer of type `reply_type` when one came.
OsResult<std::vector<uint8_t>> Exchange(mnl_socket* s, uint32_t port, Request& req,
                                        uint16_t reply_type, const std::string& what) {
  if (mnl_socket_sendto(s, req.nlh, req.nlh->nlmsg_len) < 0) return FailFromErrno(errno, what);
  std::vector<uint8_t> reply;
  ReplyContext ctx{reply_type, &reply};
  alignas(nlmsghdr) char buf[kBufferSize];
  // Bounded: every pass consumes one read; an ack or an error ends the exchange.
  for (int pass = 0; pass < 64; ++pass) {
    const ssize_t n = mnl_socket_recvfrom(s, buf, sizeof buf);
    if (n < 0) return FailFromErrno(errno, what + " (reading the answer)");
    const int r =
        mnl_cb_run(buf, static_cast<size_t>(n), req.nlh->nlmsg_seq, port, OnMessage, &ctx);
    if (r == MNL_CB_ERROR) return FailFromErrno(errno, what);
    if (r == MNL_CB_STOP) return reply;
    // MNL_CB_OK: a GET's answer without NLM_F_ACK ends here too.
    if (!reply.empty() && !(req.nlh->nlmsg_flags & NLM_F_ACK)) return reply;
  }
  return Fail(OsErrc::kSystem, what + ": no acknowledgement from the kernel");
}

}  // namespace

OsResult<void> Netlink::SetLinkUp(uint32_t index, uint32_t mtu) {
  Request req(RTM_NEWLINK, NLM_F_ACK, ++seq_);
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(req.nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = static_cast<int>(index);
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  if (mtu != 0) mnl_attr_put_u32(req.nlh, IFLA_MTU, mtu);
  auto r =
      os::Exchange(Sock(socket_), port_, req, 0, "bring link " + std::to_string(index) + " up");
  if (!r) return std::unexpected(r.error());
  return {};
}

OsResult<void> Netlink::PromoteSecondaries(uint32_t index) {
  Request req(RTM_NEWLINK, NLM_F_ACK, ++seq_);
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(req.nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = static_cast<int>(index);
  nlattr* spec = mnl_attr_nest_start(req.nlh, IFLA_AF_SPEC);
  nlattr* inet = mnl_attr_nest_start(req.nlh, AF_INET);
  nlattr* conf = mnl_attr_nest_start(req.nlh, IFLA_INET_CONF);
  mnl_attr_put_u32(req.nlh, IPV4_DEVCONF_PROMOTE_SECONDARIES, 1);
  mnl_attr_nest_end(req.nlh, conf);
  mnl_attr_nest_end(req.nlh, inet);
  mnl_attr_nest_end(req.nlh, spec);
  auto r = os::Exchange(Sock(socket_), port_, req, 0,
                        "promote_secondaries on link " + std::to_string(index));
  if (!r) return std::unexpected(r.error());
  return {};
}

namespace {

void PutAddressRequest(Request& req, uint32_t index, const IpPrefix& prefix) {
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(req.nlh, sizeof(ifaddrmsg)));
  ifa->ifa_family = FamilyOf(prefix.address);
  ifa->ifa_prefixlen = prefix.length;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = index;
  const size_t size = SizeOf(prefix.address);
  mnl_attr_put(req.nlh, IFA_LOCAL, size, prefix.address.bytes.data());
  mnl_attr_put(req.nlh, IFA_ADDRESS, size, prefix.address.bytes.data());
  if (prefix.address.family == IpAddress::Family::kV6) {
    // No duplicate address detection: the address is usable at once (it is ours alone: the
    // exit handed it out, or it is the exit's own pool address).
    ifa->ifa_flags = IFA_F_NODAD;
    mnl_attr_put_u32(req.nlh, IFA_FLAGS, IFA_F_NODAD);
  }
}

void PutRouteRequest(Request& req, const Route& route) {
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(req.nlh, sizeof(rtmsg)));
  rtm->rtm_family = FamilyOf(route.destination.address);
  rtm->rtm_dst_len = route.destination.length;
  rtm->rtm_table = RT_TABLE_MAIN;
  rtm->rtm_protocol = RTPROT_STATIC;
  rtm->rtm_scope = route.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  rtm->rtm_type = RTN_UNICAST;
  const size_t size = SizeOf(route.destination.address);
  if (route.destination.length > 0) {
    mnl_attr_put(req.nlh, RTA_DST, size, route.destination.address.bytes.data());
  }
  if (route.oif != 0) mnl_attr_put_u32(req.nlh, RTA_OIF, route.oif);
  if (route.gateway) mnl_attr_put(req.nlh, RTA_GATEWAY, size, route.gateway->bytes.data());
  if (route.metric != 0) mnl_attr_put_u32(req.nlh, RTA_PRIORITY, route.metric);
}

OsResult<void> CheckRoute(const Route& route) {
  if (route.destination.length > MaxLength(route.destination.address)) {
    return Fail(OsErrc::kBadArgument, "route " + route.destination.ToString() + ": bad length");
  }
  if (route.gateway && route.gateway->family != route.destination.address.family) {
    return Fail(OsErrc::kBadArgument,
                "route " + route.destination.ToString() + ": gateway of another family");
  }
  if (route.oif == 0 && !route.gateway) {
    return Fail(OsErrc::kBadArgument,
                "route " + route.destination.ToString() + ": needs an interface or a gateway");
  }
  return {};
}

}  // namespace

OsResult<void> Netlink::AddAddress(uint32_t index, const IpPrefix& prefix) {
  if (prefix.length > MaxLength(prefix.address)) {
    return Fail(OsErrc::kBadArgument, "address " + prefix.ToString() + ": bad prefix length");
  }
  Request req(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, ++seq_);
  PutAddressRequest(req, index, prefix);
  auto r = os::Exchange(Sock(socket_), port_, req, 0, "add address " + prefix.ToString());
  if (!r) return std::unexpected(r.error());
  return {};
}

OsResult<void> Netlink::DeleteAddress(uint32_t index, const IpPrefix& prefix) {
  Request req(RTM_DELADDR, NLM_F_ACK, ++seq_);
  PutAddressRequest(req, index, prefix);
  auto r = os::Exchange(Sock(socket_), port_, req, 0, "delete address " + prefix.ToString());
  if (!r) return std::unexpected(r.error());
  return {};
}

OsResult<void> Netlink::AddRoute(const Route& route) {
  if (auto ok = CheckRoute(route); !ok) return ok;
  Request req(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, ++seq_);
  PutRouteRequest(req, route);
  auto r = os::Exchange(Sock(socket_), port_, req, 0, "add route " + route.destination.ToString());
  if (!r) return std::unexpected(r.error());
  return {};
}

OsResult<void> Netlink::DeleteRoute(const Route& route) {
  if (auto ok = CheckRoute(route); !ok) return ok;
  Request req(RTM_DELROUTE, NLM_F_ACK, ++seq_);
  PutRouteRequest(req, route);
  auto r =
      os::Exchange(Sock(socket_), port_, req, 0, "delete route " + route.destination.ToString());
  if (!r) return std::unexpected(r.error());
  return {};
}

OsResult<RouteLookup> Netlink::LookupRoute(const IpAddress& destination) {
  Request req(RTM_GETROUTE, 0, ++seq_);
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(req.nlh, sizeof(rtmsg)));
  rtm->rtm_family = FamilyOf(destination);
  rtm->rtm_dst_len = MaxLength(destination);
  mnl_attr_put(req.nlh, RTA_DST, SizeOf(destination), destination.bytes.data());
  const std::string what = "route lookup " + destination.ToString();
  auto reply = os::Exchange(Sock(socket_), port_, req, RTM_NEWROUTE, what);
  if (!reply) return std::unexpected(reply.error());
  if (reply->empty()) return Fail(OsErrc::kNotFound, what + ": no answer");
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(reply->data());
  const auto* answer = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(nlh));
  RouteLookup out;
  struct Attrs {
    const nlattr* oif = nullptr;
    const nlattr* gateway = nullptr;
    const nlattr* source = nullptr;
  } attrs;
  mnl_attr_parse(
      nlh, sizeof(rtmsg),
      [](const nlattr* attr, void* data) -> int {
        auto* a = static_cast<Attrs*>(data);
        switch (mnl_attr_get_type(attr)) {
          case RTA_OIF:
            a->oif = attr;
            break;
          case RTA_GATEWAY:
            a->gateway = attr;
            break;
          case RTA_PREFSRC:
            a->source = attr;
            break;
          default:
            break;
        }
        return MNL_CB_OK;
      },
      &attrs);
  if (answer->rtm_type != RTN_UNICAST && answer->rtm_type != RTN_LOCAL) {
    return Fail(OsErrc::kNotFound,
                what + ": unreachable (route type " + std::to_string(answer->rtm_type) + ")");
  }
  out.local = answer->rtm_type == RTN_LOCAL;
  if (attrs.oif && mnl_attr_get_payload_len(attrs.oif) == 4) out.oif = mnl_attr_get_u32(attrs.oif);
  if (attrs.gateway) {
    out.gateway = AddressFrom(answer->rtm_family, mnl_attr_get_payload(attrs.gateway),
                              mnl_attr_get_payload_len(attrs.gateway));
  }
  if (attrs.source) {
    out.source = AddressFrom(answer->rtm_family, mnl_attr_get_payload(attrs.source),
                             mnl_attr_get_payload_len(attrs.source));
  }
  return out;
}

OsResult<uint32_t> InterfaceMtu(uint32_t index) {
  struct ifreq ifr {};
  if (if_indextoname(index, ifr.ifr_name) == nullptr) {
    // ENXIO: no interface has that index (read as ENODEV: kNotFound).
    return FailFromErrno(errno == ENXIO ? ENODEV : errno, "interface " + std::to_string(index));
  }
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return FailFromErrno(errno, "socket for SIOCGIFMTU");
  const int rc = ::ioctl(fd, SIOCGIFMTU, &ifr);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return FailFromErrno(err, std::string("MTU of ") + ifr.ifr_name);
  return static_cast<uint32_t>(ifr.ifr_mtu);
}

}  // namespace dvpn::tunnel::os
