//! Kernel modules of an unpacked Debian kernel package: where each one is and what it needs loaded first.
//!
//! The package carries no `modules.dep` (its postinst runs depmod) and this machine may have no kmod, so the
//! dependencies are read from each module's `.modinfo` strings: `depends=a,b` and `softdep=pre: c` (a soft
//! dependency names a module or an alias, e.g. libcrc32c's `crc32c`, which the crypto modules provide).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::{Context, Error, Result};

/// The `.ko` files under a `lib/modules/RELEASE` directory, by module name (`-` written `_`).
#[derive(Debug)]
pub struct ModuleTree {
    modules: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// The module name of a file name or a dependency (`ip_vs_rr.ko` → `ip_vs_rr`, `crc32c-generic` →
/// `crc32c_generic`).
pub fn module_name(s: &str) -> String {
    s.trim_end_matches(".ko").replace('-', "_")
}

/// The values of `key=` in a module's `.modinfo` (NUL-separated `key=value` strings).
pub fn modinfo(ko: &[u8], key: &str) -> Vec<String> {
    let needle = format!("{key}=");
    ko.split(|&b| b == 0)
        .filter_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

impl ModuleTree {
    /// Indexes `dir` (`…/lib/modules/RELEASE`).
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut modules = BTreeMap::new();
        let mut stack = vec![dir.join("kernel")];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).context(|| format!("reading {}", d.display()))? {
                let path = entry.context(|| format!("reading {}", d.display()))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|n| n.ends_with(".ko")) {
                    modules.insert(module_name(name), path);
                }
            }
        }
        let builtin = fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .map(module_name)
            .collect();
        Ok(Self { modules, builtin })
    }

    /// The file of module `name`.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.modules.get(&module_name(name)).map(PathBuf::as_path)
    }

    /// `wanted` and everything they need, in an order `insmod` can load them (dependencies first).
    /// Dependencies built into the kernel are left out.
    ///
    /// # Errors
    /// A wanted module or a hard dependency that is neither a module nor built in.
    pub fn closure(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            let name = module_name(w);
            if !self.modules.contains_key(&name) {
                return Err(Error(format!("module {name} is not in the kernel package")));
            }
            self.visit(&name, &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(Error(format!("dependency {name} is neither a module nor built in")));
        };
        let ko = fs::read(path).context(|| format!("reading {}", path.display()))?;
        let mut deps: Vec<String> = modinfo(&ko, "depends")
            .iter()
            .flat_map(|d| d.split(',').filter(|s| !s.is_empty()).map(module_name).collect::<Vec<_>>())
            .collect();
        for soft in modinfo(&ko, "softdep") {
            // "pre: a b post: c": only "pre" ones must be there first; an alias resolves to a generic module.
            let mut pre = false;
            for word in soft.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    w if pre => {
                        if let Some(m) = self.resolve_soft(w)? {
                            deps.push(m);
                        }
                    }
                    _ => {}
                }
            }
        }
        for d in deps {
            self.visit(&d, seen, order)?;
        }
        order.push(name.to_string());
        Ok(())
    }

    /// A soft dependency: a module name, or an alias provided by a crypto module (the `_generic` one
    /// preferred: the accelerated ones need CPU features qemu's default CPU lacks).
    fn resolve_soft(&self, word: &str) -> Result<Option<String>> {
        let name = module_name(word);
        if self.modules.contains_key(&name) || self.builtin.contains(&name) {
            return Ok(Some(name));
        }
        let mut found: Vec<&String> = Vec::new();
        for (m, path) in &self.modules {
            if !path.components().any(|c| c.as_os_str() == "crypto") {
                continue;
            }
            let ko = fs::read(path).context(|| format!("reading {}", path.display()))?;
            let aliases = modinfo(&ko, "alias");
            if aliases.iter().any(|a| a == word || a.strip_prefix("crypto-") == Some(word)) {
                found.push(m);
            }
        }
        found.sort_by_key(|m| !m.ends_with("_generic"));
        Ok(found.first().map(|m| (*m).clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modinfo_strings() {
        let ko = b"\x7fELF...\0license=GPL\0depends=nf_conntrack,libcrc32c\0softdep=pre: crc32c\0vermagic=6.1\0";
        assert_eq!(modinfo(ko, "depends"), ["nf_conntrack,libcrc32c"]);
        assert_eq!(modinfo(ko, "softdep"), ["pre: crc32c"]);
        assert!(modinfo(ko, "alias").is_empty());
        assert_eq!(module_name("crc32c-generic.ko"), "crc32c_generic");
    }

    #[test]
    fn closure_orders_dependencies_first() {
        let dir = std::env::temp_dir().join(format!("ipvs-interop-kmod-{}", std::process::id()));
        let k = dir.join("kernel");
        fs::create_dir_all(k.join("crypto")).unwrap();
        fs::write(k.join("a.ko"), b"\0depends=b,c\0").unwrap();
        fs::write(k.join("b.ko"), b"\0depends=c\0softdep=pre: crc32c\0").unwrap();
        fs::write(k.join("c.ko"), b"\0depends=\0").unwrap();
        fs::write(k.join("crypto/crc32c-intel.ko"), b"\0alias=crypto-crc32c\0alias=crc32c\0").unwrap();
        fs::write(k.join("crypto/crc32c_generic.ko"), b"\0alias=crypto-crc32c\0alias=crc32c\0").unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/lib/d.ko\n").unwrap();
        fs::write(k.join("e.ko"), b"\0depends=d\0").unwrap();
        fs::write(k.join("f.ko"), b"\0depends=zz\0").unwrap();
        let tree = ModuleTree::open(&dir).unwrap();
        assert_eq!(tree.closure(&["a", "e"]).unwrap(), ["c", "crc32c_generic", "b", "a", "e"]);
        assert!(tree.closure(&["f"]).unwrap_err().0.contains("zz"));
        assert!(tree.closure(&["nope"]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
