//! The mounted ext4 filesystems and the features that decide how large a directory index can grow.

use super::*;

/// A mounted ext4 filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct FsInfo {
    pub device: DevNum,
    pub device_name: Option<String>,
    /// Where it is mounted (the mount of its root when there is one, else the shortest mount point).
    pub mount_point: String,
    /// How many mounts of it the host's mount table holds (bind mounts included).
    pub mounts: usize,
    pub fs_type: String,
    pub block_size: Option<u32>,
    pub features: Option<Features>,
    /// 2, or 3 with large_dir.
    pub max_levels: Option<u8>,
    pub uuid: Option<String>,
    pub volume_name: Option<String>,
    /// Why the superblock could not be read, when it could not.
    pub error: Option<String>,
}

/// Every mounted ext4 (and ext2/ext3) filesystem in the host's mount table, one per device, with the directory
/// features read from its superblock.
pub fn filesystems(host: &Host) -> Result<Vec<FsInfo>, Ext4Error> {
    let data =
        procfs::mountinfo(host, 1).map_err(|e| Ext4Error::io("reading /proc/1/mountinfo", e))?;
    let (mounts, _) = mountinfo::parse(&data);
    let mut by_dev: std::collections::BTreeMap<(u32, u32), Vec<&mountinfo::Mount>> =
        Default::default();
    for m in &mounts {
        if matches!(m.fs_type.as_str(), "ext4" | "ext3" | "ext2") {
            by_dev.entry(m.dev()).or_default().push(m);
        }
    }
    let mut out = Vec::new();
    for ((major, minor), ms) in by_dev {
        let Some(primary) = ms
            .iter()
            .min_by_key(|m| (m.root != b"/", m.mount_point.len()))
        else {
            continue;
        };
        let dev = DevNum { major, minor };
        let mut info = FsInfo {
            device: dev,
            device_name: None,
            mount_point: display_bytes(&primary.mount_point),
            mounts: ms.len(),
            fs_type: primary.fs_type.clone(),
            block_size: None,
            features: None,
            max_levels: None,
            uuid: None,
            volume_name: None,
            error: None,
        };
        match read::open_device(host, dev).and_then(|d| d.superblock().map(|sb| (d, sb))) {
            Ok((d, sb)) => {
                info.device_name = Some(d.name);
                info.block_size = Some(sb.block_size);
                info.features = Some(sb.features());
                info.max_levels = Some(sb.max_htree_levels());
                info.uuid = Some(sb.uuid_string());
                info.volume_name = Some(display_bytes(&sb.volume_name));
            }
            Err(e) => info.error = Some(e.to_string()),
        }
        out.push(info);
    }
    Ok(out)
}
