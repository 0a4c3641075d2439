#pragma once
// The flag shapes the executables share: one home for each flag that several daemons take (its
// name, help text and check), so that they spell it the same way, and for the shape of a
// numeric flag (default shown, range checked).

#include <string>
#include <string_view>
#include <type_traits>

#include <CLI/CLI.hpp>

namespace dvpn::cli {

// A numeric flag whose default --help shows and whose values outside lo..hi CLI11 refuses
// (exit code 2, like every bad flag).
template <class T>
CLI::Option* AddBounded(CLI::App& app, const std::string& name, T& value, const std::string& help,
                        std::type_identity_t<T> lo, std::type_identity_t<T> hi) {
  return app.add_option(name, value, help)->capture_default_str()->check(CLI::Range(lo, hi));
}

// --log-level (common/log.h StartLogging reads it).
CLI::Option* AddLogLevel(CLI::App& app, std::string& level);

// --identity-key-hex (refused: cli_util.h kIdentityKeyHexRemoved), --identity-key-file and
// --keystore: where LoadAccountKey finds the payment account key. `whose` names the key in the
// help ("provider account", "payment identity"); `when_none` ends the key file's help.
void AddAccountKeyFlags(CLI::App& app, std::string& hex, std::string& key_file,
                        std::string& keystore, std::string_view whose, std::string_view when_none);

// --socks, --socks-port-file, --socks-user and --socks-password-file of a client daemon
// (LoadSocksCredentials reads the last two); `user_note` ends --socks-user's help.
void AddSocksFlags(CLI::App& app, std::string& listen, std::string& port_file, std::string& user,
                   std::string& password_file, std::string_view user_note = "");

}  // namespace dvpn::cli
