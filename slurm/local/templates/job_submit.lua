-- autoresearch-local-slurm: installed by slurm/local/up.sh next to slurm.conf.
-- The single node carries both GPU types, but on a real cluster partition h100
-- holds only H100 nodes and h200 only H200 nodes. Make the local cluster act
-- the same: an untyped GPU request (--gres=gpu:N, --gpus-per-node=N, --gpus=N)
-- gets its partition's type, and a request for another type is refused.

local GPU_TYPE = { h100 = "h100", h200 = "h200" }
local DEFAULT_PARTITION = "h100"
local FIELDS = { "tres_per_node", "tres_per_job", "tres_per_task", "tres_per_socket" }

-- Returns the TRES string (e.g. "gres:gpu:2,gres:gpu:h200:1") with every GPU
-- item typed, or nil and an error message.
local function pin_gpu_type(spec, gtype, partition)
    local out = {}
    for item in string.gmatch(spec, "[^,]+") do
        local parts = {}
        for p in string.gmatch(item, "[^:]+") do
            table.insert(parts, p)
        end
        if parts[1] == "gres" and parts[2] == "gpu" then
            local asked = parts[3]
            if asked == nil then -- "gres:gpu": one GPU
                item = "gres:gpu:" .. gtype .. ":1"
            elseif string.match(asked, "^%d") then -- "gres:gpu:N": untyped
                item = "gres:gpu:" .. gtype .. ":" .. asked
            elseif asked ~= gtype then -- "gres:gpu:TYPE[:N]"
                return nil, string.format("partition %s has only %s GPUs (asked for gpu:%s)",
                    partition, gtype, asked)
            end
        end
        table.insert(out, item)
    end
    return table.concat(out, ",")
end

function slurm_job_submit(job_desc, part_list, submit_uid)
    local partition = job_desc.partition or DEFAULT_PARTITION
    local gtype = GPU_TYPE[partition]
    if gtype == nil then
        return slurm.SUCCESS -- several partitions or another one: leave as is
    end
    for _, field in ipairs(FIELDS) do
        local spec = job_desc[field]
        if spec ~= nil and spec ~= "" then
            local fixed, err = pin_gpu_type(spec, gtype, partition)
            if fixed == nil then
                slurm.log_user("%s", err)
                return slurm.ERROR
            end
            if fixed ~= spec then
                job_desc[field] = fixed
            end
        end
    end
    return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    return slurm.SUCCESS
end

return slurm.SUCCESS
